"""Drain throughput with 1, 2 and 4 worker processes over one store.

    python -m benchmarks.scaling [--backends sqlite,postgres,mariadb,redis] [--jobs 10000]
                                 [--processes 1,2,4] [--concurrency 8] [--body noop|incr|sleep|cpu]
                                 [--repeat 1]

Each run batch-enqueues ``--jobs`` no-op jobs, then runs N worker processes with
``--concurrency`` threads each: by default ``exqueue worker --processes N`` (the
CLI's supervisor, stopped with SIGTERM once every job ran); with ``--plain``, N
plain OS processes (``python -m benchmarks.scaling --child URL``) each running
``queue.drain()``, waited for. Throughput is jobs
over the time from the first job's start to the last job's end, as the jobs
record them (``benchmarks.counter``), so process start-up is not counted; every
run verifies that exactly ``--jobs`` jobs ran. ``--body`` picks the job body
(``benchmarks.bodies``; ``cpu`` is fixed pure-Python work that holds the GIL).
Repeats interleave the process counts (1, 2, 4, 1, 2, 4, ...); figures are medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

from tabulate import tabulate

from benchmarks import common
from benchmarks.common import Phase
from benchmarks.exq import ADAPTERS


def child(url: str, concurrency: int) -> int:
    from benchmarks.exq_app import make_queue, make_storage

    storage = make_storage(url)
    try:
        make_queue(storage, concurrency).drain(timeout=600)
    finally:
        storage.close()
    return 0


def run(backend: str, processes: int, args: argparse.Namespace, root: str) -> float:
    adapter = next(cls for cls in ADAPTERS if cls.backend == backend)()
    adapter.setup()
    try:
        for start in range(0, args.jobs, 1000):
            adapter.enqueue_batch(range(start, min(start + 1000, args.jobs)))
        phase = Phase(root, f"{backend}-{processes}-{time.monotonic_ns()}")
        if not args.plain:
            supervisor = common.WorkerProcess(
                [
                    common.venv_bin("exqueue"),
                    "worker",
                    "--app",
                    "benchmarks.exq_app:queue",
                    "--processes",
                    str(processes),
                ],
                env={
                    "EXQ_BENCH_URL": adapter.resolved_url(),
                    "EXQ_BENCH_CONCURRENCY": str(args.concurrency),
                    "EXQ_BENCH_BODY": args.body,
                },
                log_path=os.path.join(tempfile.gettempdir(), f"exqbench-scaling-{backend}.log"),
            )
            try:
                common.wait_until(
                    lambda: phase.totals().count >= args.jobs,
                    max(120.0, args.jobs / 20),
                    f"{backend} x{processes} to drain",
                    interval=0.05,
                    check=supervisor.check,
                )
            finally:
                supervisor.stop(30)
            got = phase.verify(args.jobs, f"{backend} with {processes} processes")
            return args.jobs / (got.last_end - got.first_start)
        workers = [
            common.WorkerProcess(
                [
                    common.python(),
                    "-m",
                    "benchmarks.scaling",
                    "--child",
                    adapter.resolved_url(),
                    "--concurrency",
                    str(args.concurrency),
                ],
                log_path=os.path.join(tempfile.gettempdir(), f"exqbench-scaling-{backend}.log"),
            )
            for _ in range(processes)
        ]
        deadline = time.monotonic() + max(120.0, args.jobs / 20)
        for w in workers:
            code = w.proc.wait(max(deadline - time.monotonic(), 1))
            w.stop()
            if code != 0:
                raise common.BenchError(f"a {backend} drain process exited with code {code}")
        got = phase.verify(args.jobs, f"{backend} with {processes} processes")
        return args.jobs / (got.last_end - got.first_start)
    finally:
        adapter.teardown()


def main(argv: list[str] | None = None) -> int:
    parser = common.arguments("benchmarks.scaling", __doc__)
    parser.add_argument("--backends", default="sqlite,postgres,mariadb,redis")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--body", choices=("noop", "incr", "sleep", "cpu"), default="noop")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="plain processes running queue.drain() instead of the CLI supervisor",
    )
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.concurrency)
    os.environ["EXQ_BENCH_BODY"] = args.body  # for --plain children too
    common.ensure_databases()
    counts = [int(p) for p in args.processes.split(",")]
    root = tempfile.mkdtemp(prefix="exqbench-scaling-")
    rows = []
    for backend in args.backends.split(","):
        runs: dict[int, list[float]] = {p: [] for p in counts}
        for _ in range(args.repeat):
            for processes in counts:  # interleaved: a burst of load hits every count alike
                print(f"{backend} x{processes} ...", file=sys.stderr, flush=True)
                runs[processes].append(run(backend, processes, args, root))
        rates = [statistics.median(runs[p]) for p in counts]
        spans = [f"{min(runs[p]):,.0f}–{max(runs[p]):,.0f}" for p in counts]
        rows.append(
            [
                backend,
                *(f"{r:,.0f} ({span})" for r, span in zip(rates, spans, strict=True)),
                *(f"{r / rates[0]:.2f}×" for r in rates[1:]),
            ]
        )
    print()
    how = "processes running queue.drain()" if args.plain else "exqueue worker --processes N"
    print(
        f"drain throughput (jobs/s, median (min–max) of {args.repeat}), {args.jobs:,} jobs, "
        f"{args.body} body, {how}, {args.concurrency} threads per process, {os.cpu_count()} CPUs"
    )
    print(
        tabulate(
            rows,
            ["backend", *(f"{p} proc" for p in counts), *(f"{p} vs 1" for p in counts[1:])],
            tablefmt="github",
            disable_numparse=True,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
