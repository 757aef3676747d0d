"""Like-for-like throughput of exqueue and its peers, and the ratios table, in one command.

    python -m benchmarks.run [--libraries exqueue-redis,huey-redis,...] [--concurrency 1,4,64,256]
                             [--bodies noop,incr,sleep] [--jobs 10000] [--sleep-rounds 100]
                             [--repeat 3] [--json FILE]

    quick:  python -m benchmarks.run --jobs 2000 --repeat 1 --concurrency 4 --bodies incr

Every library, exqueue included, runs its jobs in one worker process started by
its own command (``benchmarks.matrix``), with the same concurrency and the same
job body (``benchmarks.bodies``: no-op, one Redis ``INCR`` on the job's own
connection, a 10 ms sleep) as every other library in the same cell. The floor
rows are the same body run by plain threads and by asyncio tasks with no queue
(``benchmarks.plain``), also in a process of their own.

One run of a cell: empty the store, enqueue the jobs with no worker running
(batch enqueue where the library has one), start the worker command, wait until
the probe (``benchmarks.counter``) has counted them, check that exactly that
many ran (and, for ``incr``, that Redis counted exactly that many), stop the
worker. Throughput is jobs over the time from the first job's start to the
last job's end as the jobs record them, so start-up is not counted. CPU is the
worker's process tree (``benchmarks.cpu``) from the last sample before its
first job to the first sample after its last, per 1,000 jobs; the Redis server's
CPU (``INFO cpu``) over the same span, per job, on every cell that uses Redis
(server-wide: quiet machine only). The sleep body
runs ``--sleep-rounds`` jobs per slot (at most ``--jobs``) and shows the share
of its physical limit, concurrency / 10 ms.

Repeats interleave the libraries of a cell; figures are medians with min-max.
Ratios divide exqueue's median on a backend by each peer's on the same backend,
at the same concurrency, with the same body; a cell a library cannot run shows
"—" and the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

from tabulate import tabulate

from benchmarks import common, cpu, matrix
from benchmarks.common import Adapter, BenchError, Phase
from benchmarks.matrix import Config

Cell = tuple[str, int, str]  # library key, concurrency, body


def adapters() -> dict[str, Callable[[], Adapter]]:
    """Every adapter with a worker command, by key; a library that fails to import is left out."""
    from benchmarks import bare, exq, plain
    from benchmarks.peers import PEERS

    found: dict[str, Callable[[], Adapter]] = {}
    for cls in [*exq.ADAPTERS, *PEERS, *plain.FLOORS, *bare.ADAPTERS]:
        key = f"{cls.library}-{cls.backend}"
        if key in matrix.BY_KEY:
            found[key] = cls
    return found


def enqueue(adapter: Adapter, jobs: int) -> None:
    if not adapter.enqueues:
        return
    if adapter.batch:
        for start in range(0, jobs, 1000):
            adapter.enqueue_batch(range(start, min(start + 1000, jobs)))
    else:
        for n in range(jobs):
            adapter.enqueue_one(n)


def redis_server_usec(client: Any) -> float:
    """CPU microseconds the Redis server process has used so far, for all its clients.

    ``INFO cpu`` rather than ``INFO commandstats``: the latter counts the commands a
    Lua script runs both on their own and inside the script's time, and leaves out
    reading and writing the sockets."""
    cpu_info = client.info("cpu")
    return (float(cpu_info["used_cpu_user"]) + float(cpu_info["used_cpu_sys"])) * 1e6


def watch(
    adapter: Adapter,
    phase: Phase,
    jobs: int,
    timeout: float,
    server: Callable[[], float] | None = None,
) -> tuple[float, float, float, float]:
    """Wait for ``jobs`` jobs. Returns the worker's CPU seconds and the Redis server's
    microseconds (``server``; 0 without) just before the first job and after the last."""
    assert adapter.worker is not None
    pid = adapter.worker.proc.pid
    deadline = time.monotonic() + timeout
    pids = cpu.tree(pid)
    base = cpu.seconds(pid, pids)
    server_base = server() if server else 0.0
    samples = 0
    started = False
    while True:
        samples += 1
        if samples % 50 == 0:  # a worker may start children at any time
            pids = cpu.tree(pid)
        # CPU first, then the count: a sample taken while the count is still 0
        # holds no job's work. The server is asked only until the first job
        # runs, so the drain itself is not slowed by the harness's INFO calls.
        used = cpu.seconds(pid, pids)
        server_used = server() if server and not started else server_base
        count = phase.totals().count
        if count == 0 and not started:
            # Only before the first job: a count that reads 0 later (see
            # counter._read_slot) must not move the baseline into the run.
            base, server_base = used, server_used
        elif count >= jobs:
            return base, cpu.seconds(pid), server_base, server() if server else 0.0
        else:
            started = True
        adapter.check_worker()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s: {count} of {jobs} jobs ran")
        time.sleep(0.01)


def run_cell(adapter: Adapter, config: Config, jobs: int, root: str) -> dict[str, float]:
    what = f"{config.library.key} c={config.concurrency} {config.body}"
    # The Redis server's CPU is read on every cell that uses Redis (the store or the body).
    on_redis = config.library.backend.split("-")[0] == "redis" or config.body == "incr"
    client = common.redis_client()
    adapter.setup()
    try:
        enqueue(adapter, jobs)
        if config.body == "incr":
            client.delete("exqbench:incr")
        phase = Phase(root, f"{config.library.key}-c{config.concurrency}-{config.body}")
        adapter.start_worker(config, jobs)
        try:
            slowest = 0.01 * jobs / config.concurrency if config.body == "sleep" else 0.0
            # Generous: the slowest peers drain a few hundred no-op jobs a second.
            base, end, server_base, server_end = watch(
                adapter,
                phase,
                jobs,
                max(120.0, jobs / 20 + 5 * slowest),
                (lambda: redis_server_usec(client)) if on_redis else None,
            )
            got = phase.verify(jobs, what)
            if config.body == "incr":
                counted = int(client.get("exqbench:incr") or 0)
                if counted != jobs:
                    raise BenchError(f"{what}: Redis counted {counted} INCRs, not {jobs}")
        finally:
            adapter.stop_worker()
    finally:
        client.close()
        adapter.teardown()
    rate = jobs / (got.last_end - got.first_start)
    out = {"rate": rate, "cpu_per_1000": (end - base) * 1000 / jobs, "jobs": float(jobs)}
    limit = config.limit()
    if limit:
        out["of_limit"] = rate / limit
    if on_redis:
        out["server_us"] = (server_end - server_base) / jobs
    return out


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def aggregate(runs: list[dict[str, float]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"runs": len(runs)}
    for metric in ("rate", "cpu_per_1000", "of_limit", "server_us"):
        values = [r[metric] for r in runs if metric in r]
        if values:
            merged[metric] = summary(values)
    return merged


def fmt_range(s: dict[str, float] | None, fmt: str = "{:,.0f}") -> str:
    if not s:
        return "—"
    if s["min"] == s["max"]:
        return fmt.format(s["median"])
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"


class Notes:
    """Reasons a cell shows "—", numbered once and printed under the tables."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def mark(self, reason: str) -> str:
        if reason not in self.reasons:
            self.reasons.append(reason)
        return f"— [{self.reasons.index(reason) + 1}]"

    def __str__(self) -> str:
        return "\n".join(f"[{i}] {r}" for i, r in enumerate(self.reasons, 1))


def figures_table(configs: list[Config], results: dict[Cell, dict[str, Any]], notes: Notes) -> str:
    rows = []
    for cfg in configs:
        lib = cfg.library
        head = [cfg.concurrency, cfg.body, lib.library, lib.backend, lib.model]
        r = results.get((lib.key, cfg.concurrency, cfg.body))
        if cfg.skip or r is None or "error" in r:
            why = cfg.skip or (r or {}).get("error", "not run")
            rows.append([*head, notes.mark(why), "", "", "", ""])
            continue
        failed = f" ({len(r['failed'])} failed)" if r.get("failed") else ""
        rows.append(
            [
                *head,
                fmt_range(r.get("rate")),
                fmt_range(r.get("of_limit"), "{:.0%}"),
                fmt_range(r.get("cpu_per_1000"), "{:.3f}"),
                fmt_range(r.get("server_us"), "{:.1f}"),
                f"{r['runs']}{failed}",
            ]
        )
    headers = [
        "conc.",
        "body",
        "library",
        "backend",
        "model",
        "jobs/s median (min–max)",
        "of limit",
        "CPU s / 1,000 jobs",
        "Redis CPU µs/job",
        "runs",
    ]
    return tabulate(rows, headers, tablefmt="github", disable_numparse=True)


def ratio_rows(
    configs: list[Config], results: dict[Cell, dict[str, Any]], notes: Notes
) -> list[list[str]]:
    """exqueue over each peer on the same backend, and over each floor and bare bound
    (as a share), cell by cell; then each bare bound over the same peers and floors."""

    def median(key: str, c: int, body: str, metric: str) -> float | None:
        r = results.get((key, c, body)) or {}
        return r.get(metric, {}).get("median") if "error" not in r else None

    rows = []
    numerators = [cfg for cfg in configs if cfg.library.library == "exqueue"]
    numerators += [cfg for cfg in configs if cfg.library.reference]
    for ours in numerators:
        if ours.skip:
            continue
        c, body, backend = ours.concurrency, ours.body, ours.library.backend
        for peer in configs:
            lib = peer.library
            if (peer.concurrency, peer.body) != (c, body) or lib.library in (
                "exqueue",
                ours.library.library,
            ):
                continue
            share = lib.floor or lib.reference
            # An asyncio variant ("redis-asyncio") is compared with its store's peers;
            # a bare bound only with its own backend's.
            if lib.reference and lib.backend != backend:
                continue
            if lib.backend != backend.split("-")[0] and not share:
                continue
            name = f"{ours.library.key} / {lib.key}"
            if peer.skip:
                rows.append([str(c), body, name, notes.mark(peer.skip), ""])
                continue
            a, b = median(ours.library.key, c, body, "rate"), median(lib.key, c, body, "rate")
            ca = median(ours.library.key, c, body, "cpu_per_1000")
            cb = median(lib.key, c, body, "cpu_per_1000")
            rows.append(
                [
                    str(c),
                    body,
                    name,
                    "—" if not a or not b else f"{a / b:.0%}" if share else f"{a / b:.2f}×",
                    "—" if not ca or not cb else f"{ca / cb:.2f}×",
                ]
            )
    return rows


def ratios_table(configs: list[Config], results: dict[Cell, dict[str, Any]], notes: Notes) -> str:
    headers = [
        "conc.",
        "body",
        "ratio",
        "jobs/s (>1×: faster; floor, bare: share reached)",
        "CPU/job (<1: cheaper)",
    ]
    rows = ratio_rows(configs, results, notes)
    return tabulate(rows, headers, tablefmt="github", disable_numparse=True)


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _names(text: str) -> list[str]:
    return [v for v in text.split(",") if v]


def parser() -> argparse.ArgumentParser:
    p = common.arguments("benchmarks.run", __doc__)
    p.add_argument("--libraries", "--only", type=_names, default=[], help="keys, see --list")
    p.add_argument("--skip", type=_names, default=[], help="keys to leave out")
    p.add_argument("--concurrency", type=_ints, default=matrix.CONCURRENCIES)
    p.add_argument("--bodies", type=_names, default=list(matrix.BODIES))
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--sleep-rounds", type=int, default=100, help="sleep body: jobs per slot")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", help="also write every run's figures to this file")
    p.add_argument("--list", action="store_true", help="list the library keys and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the worker process of the run in progress is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    available = adapters()
    if args.list:
        for key, lib in matrix.BY_KEY.items():
            print(f"{key:24} {lib.model}" + ("" if key in available else "  (not installed)"))
        return 0
    keys = [k for k in args.libraries or matrix.BY_KEY if k not in args.skip]
    try:
        configs = matrix.build(keys, args.concurrency, tuple(args.bodies))
    except ValueError as exc:
        parser().error(str(exc))
    if args.jobs < 1 or args.repeat < 1 or args.sleep_rounds < 1:
        parser().error("--jobs, --repeat and --sleep-rounds must be at least 1")
    from benchmarks.peers import MISSING

    configs = [
        c
        if c.skip or c.library.key in available
        else Config(
            c.library,
            c.concurrency,
            c.body,
            "not installed: " + MISSING.get(c.library.library, "its adapter did not load"),
        )
        for c in configs
    ]
    if any(c.library.backend in ("postgres", "mariadb") for c in configs):
        common.ensure_databases()
    commit = common.git_commit()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    raw: dict[Cell, list[dict[str, float]]] = {}
    errors: dict[Cell, list[str]] = {}
    root = tempfile.mkdtemp(prefix="exqbench-")
    started_runs = 0
    try:
        for rep in range(args.repeat):
            for cfg in configs:
                if cfg.skip:
                    continue
                cell = (cfg.library.key, cfg.concurrency, cfg.body)
                jobs = matrix.jobs_for(cfg, args.jobs, args.sleep_rounds)
                print(f"[{rep + 1}/{args.repeat}] {cell} {jobs} jobs", file=sys.stderr, flush=True)
                started_runs += 1
                run_root = os.path.join(root, str(started_runs))
                os.makedirs(run_root)
                try:
                    figures = run_cell(available[cfg.library.key](), cfg, jobs, run_root)
                except Exception as exc:
                    traceback.print_exc()
                    errors.setdefault(cell, []).append(f"{type(exc).__name__}: {exc}")
                    continue
                print(
                    f"    {json.dumps({k: round(v, 4) for k, v in figures.items()})}",
                    file=sys.stderr,
                    flush=True,
                )
                raw.setdefault(cell, []).append(figures)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results: dict[Cell, dict[str, Any]] = {}
    for cell in {*raw, *errors}:
        if raw.get(cell):
            results[cell] = aggregate(raw[cell])
            if cell in errors:
                results[cell]["failed"] = errors[cell]
        else:
            results[cell] = {"error": errors[cell][0]}
    print()
    print(
        f"like-for-like throughput: one worker process per library, its own command; "
        f"{args.jobs:,} jobs per run (sleep body: {args.sleep_rounds} per slot), "
        f"medians (min–max) of {args.repeat} interleaved runs; {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, exqueue {commit}, started {started}"
    )
    print()
    notes = Notes()
    print(figures_table(configs, results, notes))
    print()
    print(ratios_table(configs, results, notes))
    if notes.reasons:
        print()
        print(notes)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "args": vars(args),
                    "commit": commit,
                    "started": started,
                    "runs": [{"cell": list(cell), "figures": runs} for cell, runs in raw.items()],
                    "errors": [{"cell": list(cell), "errors": e} for cell, e in errors.items()],
                },
                f,
                indent=2,
            )
    if errors:
        print(
            "\nSOME RUNS FAILED (see above): their figures are not in the table.", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
