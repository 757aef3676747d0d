"""What every benchmark adapter shares: service URLs, the adapter interface, and the
helpers that start, watch and stop worker processes.

An adapter drives one library on one backend. The harness (``benchmarks.run``)
calls, in order: ``setup()``; ``enqueue_one(n)`` N times; ``clear()``;
``enqueue_batch(ns)`` (or ``enqueue_one`` again when ``batch`` is False);
``start_worker(config, jobs)`` (the library's own worker command, configured by
``benchmarks.matrix``); waits until the probe (``benchmarks.counter``) has counted
N; ``stop_worker()``; ``teardown()``. Every job takes one int and runs the body
of ``benchmarks.bodies`` chosen for the run, which ends with ``counter.hit``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from benchmarks import counter

if TYPE_CHECKING:
    from benchmarks.matrix import Config

REDIS_HOST = os.environ.get("EXQ_BENCH_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("EXQ_BENCH_REDIS_PORT", "6379"))
#: A Redis database of its own: the harness flushes it (and only it) between runs.
REDIS_DB = int(os.environ.get("EXQ_BENCH_REDIS_DB", "9"))
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
#: Databases of their own on the SQL servers, created when missing.
PG_DB = os.environ.get("EXQ_BENCH_PG_DB", "exqbench")
PG_URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{PG_DB}"
PG_DSN = f"postgresql://postgres@127.0.0.1:5432/{PG_DB}"
MYSQL_DB = os.environ.get("EXQ_BENCH_MYSQL_DB", "exqbench")
MYSQL_URL = f"mysql+pymysql://root@127.0.0.1:3306/{MYSQL_DB}"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def arguments(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of ``python -m <module>``; its help shows the module docstring as written."""
    return argparse.ArgumentParser(
        prog=f"python -m {module}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


class BenchError(RuntimeError):
    """A run went wrong (wrong job count, worker died, timeout): the run fails loudly."""


class Adapter:
    """One library on one backend. Subclasses set the class attributes and methods."""

    library: ClassVar[str] = "?"
    backend: ClassVar[str] = "?"
    #: How its single worker process runs jobs, for the table ("4 threads", "solo pool").
    workers: ClassVar[str] = ""
    #: Has a real batch enqueue (one round trip / one transaction for many jobs).
    batch: ClassVar[bool] = False
    #: False for the no-queue floor, whose process makes its own jobs.
    enqueues: ClassVar[bool] = True
    notes: ClassVar[str] = ""

    @property
    def key(self) -> str:
        return f"{self.library}-{self.backend}"

    def setup(self) -> None:
        """Connect and start from an empty queue."""

    def clear(self) -> None:
        """Drop every queued job (the worker is not running)."""

    def enqueue_one(self, n: int) -> None:
        raise NotImplementedError

    def enqueue_batch(self, ns: Sequence[int]) -> None:
        raise NotImplementedError

    def start_worker(self, config: Config, jobs: int) -> None:
        """Start the library's own worker command for ``config`` (``benchmarks.matrix``)."""
        self.spawn(config.argv, env=config.env(jobs), stop_signal=config.library.stop_signal)

    #: The worker process :meth:`spawn` started, until :meth:`stop_worker`.
    worker: WorkerProcess | None = None

    def spawn(self, argv: Sequence[str], **options: Any) -> None:
        """Start the worker process, logging to ``exqbench-<key>.log`` in the temp folder."""
        log_path = os.path.join(tempfile.gettempdir(), f"exqbench-{self.key}.log")
        self.worker = WorkerProcess(argv, log_path=log_path, **options)

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def check_worker(self) -> None:
        """Raise :class:`BenchError` when the worker process died."""
        if self.worker is not None:
            self.worker.check()

    def teardown(self) -> None:
        """Close connections and remove what setup made."""


class Phase:
    """A fresh probe directory: the jobs of one phase count there."""

    def __init__(self, root: str, name: str) -> None:
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir)
        counter.reset_in_process(self.dir)

    def totals(self) -> counter.Totals:
        return counter.read(self.dir)

    def verify(self, expected: int, what: str, settle: float = 0.3) -> counter.Totals:
        time.sleep(settle)  # a duplicate delivery would show up now
        got = self.totals()
        if got.count != expected:
            raise BenchError(f"{what}: expected exactly {expected} jobs to run, {got.count} ran")
        return got


class RedisPeer(Adapter):
    """A peer on the benchmark's own Redis database: setup, clear and teardown flush it."""

    backend = "redis"

    def setup(self) -> None:
        flush_bench_redis()

    def clear(self) -> None:
        flush_bench_redis()

    def teardown(self) -> None:
        flush_bench_redis()


class WorkerProcess:
    """A worker started as a separate process, bounded in time, stopped by signal."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        stop_signal: int = signal.SIGTERM,
        log_path: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.stop_signal = stop_signal
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        self.log_path = log_path or os.devnull
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            env=full_env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def check(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise BenchError(
                f"worker exited early with code {code}: {' '.join(self.argv)} "
                f"(log: {self.log_path})"
            )

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # Our own process group (start_new_session): children go with it.
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


def python() -> str:
    return sys.executable


def venv_bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def redis_client() -> Any:
    """A client of the benchmark's own Redis database."""
    import redis

    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)


def flush_bench_redis() -> None:
    """Flush the benchmark's own Redis database (never any other)."""
    client = redis_client()
    try:
        client.flushdb()
    finally:
        client.close()


def ensure_databases() -> None:
    """Create the benchmark's own PostgreSQL and MariaDB databases when missing."""
    import psycopg
    import pymysql

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DB,)).fetchone():
            c.execute(f'CREATE DATABASE "{PG_DB}"')
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root")
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{MYSQL_DB}`")
        conn.commit()
    finally:
        conn.close()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.01, check=None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def git_commit() -> str:
    """The checkout's short commit, "+dirty" when tracked files changed ("unknown" without git)."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
