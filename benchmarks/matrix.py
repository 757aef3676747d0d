"""The like-for-like configuration matrix: which library runs which way, and why not.

Every library (exqueue included) is one worker process started by its own
command, logging warnings only (no line per job, as exqueue by default), with
the same concurrency and the same job body as every other library in the same
cell. The concurrency reaches the worker as the library's own flag where it has
one (``-w``, ``-t``, ``-c``, ``--concurrency``) and always as
``$EXQ_BENCH_CONCURRENCY`` (read by the apps that configure it in code: exqueue,
saq, arq); the body is ``$EXQ_BENCH_BODY`` (``benchmarks.bodies``). A library
that cannot run a cell (RQ has one job at a time per process) gets a reason
instead of a command, and the tables show "—" with that reason.

This module imports no peer library, so the matrix can be built (and tested)
without them installed.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field

from benchmarks.common import REDIS_URL

ENV_CONCURRENCY = "EXQ_BENCH_CONCURRENCY"
ENV_BODY = "EXQ_BENCH_BODY"
#: How many jobs a floor process (plain threads / asyncio tasks, no queue) runs.
ENV_JOBS = "EXQ_BENCH_JOBS"
#: The bare Redis bound's shape (benchmarks/bare.py): unset, "1" or "pool".
ENV_BARE_BATCH = "EXQ_BARE_BATCH"
_BARE_REDIS_MODEL = {
    "": "threads, 1 call per job",
    "pool": "threads, 1 pump, batched",
}.get(os.environ.get(ENV_BARE_BATCH, ""), "1 thread, batched")

BODIES = ("noop", "incr", "sleep")
CONCURRENCIES = (1, 4, 64, 256)
#: The sleep body's length: concurrency / SLEEP_SECONDS is the physical limit.
SLEEP_SECONDS = 0.01


def pool_size() -> int:
    """Redis connections a worker's shared pool may open: enough for every slot.

    redis-py 7 and later cap a pool at 100 connections by default, which fails
    outright at concurrency 256 in the libraries whose slots share one pool
    (Huey, saq) and in the asyncio body; a user running 256 would raise it too.
    """
    return max(100, int(os.environ.get(ENV_CONCURRENCY, "1")) + 16)


def _bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


@dataclass(frozen=True)
class Library:
    """One library on one backend, and the command that starts its worker process."""

    library: str
    backend: str
    #: How its one process runs jobs concurrently (for the table).
    model: str
    #: The worker command; ``{c}`` is replaced by the concurrency.
    argv: tuple[str, ...]
    #: The flag that carries the concurrency in ``argv`` (None: only the env var).
    flag: str | None = None
    stop_signal: int = signal.SIGTERM
    #: Concurrencies this library cannot run in one process, with the reason.
    refuses: dict[int, str] = field(default_factory=dict, hash=False)
    #: Only in the ratio tables as a denominator (the no-queue floor).
    floor: bool = False
    #: A bound, not a library (``benchmarks.bare``): exqueue's share of it, and it
    #: over the peers and floors, are in the ratio table.
    reference: bool = False

    @property
    def key(self) -> str:
        return f"{self.library}-{self.backend}"

    def command(self, concurrency: int) -> list[str]:
        head, *rest = self.argv
        exe = sys.executable if head == "python" else _bin(head)
        return [exe, *(a.format(c=concurrency) for a in rest)]


_EXQ = ("exqueue", "worker", "--app", "benchmarks.exq_app:queue", "--processes", "1")
_RQ_ONLY_ONE = (
    "RQ runs one job at a time per worker process (no threads, no asyncio); "
    "more means more processes, not the same set-up"
)

LIBRARIES: tuple[Library, ...] = (
    Library("exqueue", "redis", "threads", _EXQ),
    Library("exqueue", "redis-asyncio", "asyncio", _EXQ),
    Library("exqueue", "postgres-asyncio", "asyncio", _EXQ),
    Library("exqueue", "postgres", "threads", _EXQ),
    Library("exqueue", "sqlite", "threads", _EXQ),
    Library("exqueue", "mariadb", "threads", _EXQ),
    Library(
        "huey",
        "redis",
        "threads",
        (
            "huey_consumer",
            "benchmarks.peers.huey_bench.huey",
            "-w",
            "{c}",
            "-k",
            "thread",
            "-n",
            "-q",
        ),
        flag="-w",
        stop_signal=signal.SIGINT,  # huey's graceful shutdown
    ),
    Library(
        "dramatiq",
        "redis",
        "threads",
        ("dramatiq", "benchmarks.peers.dramatiq_bench", "-p", "1", "-t", "{c}"),
        flag="-t",
    ),
    Library(
        "celery",
        "redis",
        "threads",
        (
            "celery",
            "-A",
            "benchmarks.peers.celery_bench",
            "worker",
            "-P",
            "threads",
            "-c",
            "{c}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
            "-Q",
            "exqbench",
        ),
        flag="-c",
    ),
    Library(
        "rq",
        "redis",
        "one job at a time",
        (
            "rq",
            "worker",
            "-w",
            "rq.worker.SimpleWorker",
            "--url",
            REDIS_URL,
            "-q",
            "exqbench",
            "--quiet",
        ),
        refuses={4: _RQ_ONLY_ONE, 64: _RQ_ONLY_ONE, 256: _RQ_ONLY_ONE},
    ),
    Library("saq", "redis", "asyncio", ("saq", "benchmarks.peers.saq_bench.settings")),
    Library("arq", "redis", "asyncio", ("arq", "benchmarks.peers.arq_bench.WorkerSettings")),
    Library(
        "procrastinate",
        "postgres",
        "asyncio",
        (
            "procrastinate",
            "--log-level",
            "warning",
            "--app",
            "benchmarks.peers.procrastinate_bench.app",
            "worker",
            "--concurrency",
            "{c}",
            "--queues",
            "exqbench",
        ),
        flag="--concurrency",
    ),
    Library(
        "bare",
        "redis",
        _BARE_REDIS_MODEL,
        ("python", "-m", "benchmarks.bare", "redis"),
        reference=True,
    ),
    Library(
        "bare",
        "redis-asyncio",
        "asyncio tasks, 1 pump",
        ("python", "-m", "benchmarks.bare", "redis-asyncio"),
        reference=True,
    ),
    Library(
        "bare",
        "postgres",
        "threads, 1 call per job",
        ("python", "-m", "benchmarks.bare", "postgres"),
        reference=True,
    ),
    Library(
        "floor",
        "threads",
        "plain threads",
        ("python", "-m", "benchmarks.plain", "threads"),
        floor=True,
    ),
    Library(
        "floor",
        "asyncio",
        "asyncio tasks",
        ("python", "-m", "benchmarks.plain", "asyncio"),
        floor=True,
    ),
)
BY_KEY = {lib.key: lib for lib in LIBRARIES}


@dataclass(frozen=True)
class Config:
    """One cell: a library at a concurrency with a body (``skip`` says why it cannot run)."""

    library: Library
    concurrency: int
    body: str
    skip: str | None = None

    @property
    def argv(self) -> list[str]:
        return self.library.command(self.concurrency)

    def env(self, jobs: int) -> dict[str, str]:
        return {
            ENV_CONCURRENCY: str(self.concurrency),
            ENV_BODY: self.body,
            ENV_JOBS: str(jobs),
        }

    def limit(self) -> float | None:
        """Jobs/s no set-up can beat with this body (sleep only): concurrency / sleep."""
        return self.concurrency / SLEEP_SECONDS if self.body == "sleep" else None


def jobs_for(config: Config, jobs: int, sleep_rounds: int) -> int:
    """The job count of a cell: the sleep body runs ``sleep_rounds`` jobs per slot at most."""
    if config.body == "sleep":
        return min(jobs, config.concurrency * sleep_rounds)
    return jobs


def build(
    keys: list[str] | None = None,
    concurrencies: tuple[int, ...] = CONCURRENCIES,
    bodies: tuple[str, ...] = BODIES,
) -> list[Config]:
    """Every cell, grouped by (concurrency, body) so one cell's libraries run back to back."""
    unknown = [k for k in keys or () if k not in BY_KEY]
    if unknown:
        raise ValueError(f"unknown libraries {unknown}; known: {', '.join(BY_KEY)}")
    bad = [b for b in bodies if b not in BODIES]
    if bad:
        raise ValueError(f"unknown bodies {bad}; known: {', '.join(BODIES)}")
    if any(c < 1 for c in concurrencies):
        raise ValueError(f"concurrency must be at least 1, got {list(concurrencies)}")
    libraries = [BY_KEY[k] for k in keys] if keys else list(LIBRARIES)
    return [
        Config(lib, c, body, lib.refuses.get(c))
        for c in concurrencies
        for body in bodies
        for lib in libraries
    ]
