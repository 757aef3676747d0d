"""Enqueue and idle latency of exqueue on every backend and of its peers; one table.

    python -m benchmarks.enqueue [--jobs 10000] [--repeat 3] [--only exqueue-redis,huey-redis]

For each library/backend, in the same run: enqueue one by one (jobs/s), batch
enqueue (jobs/s, where the library has one), and enqueue-to-start latency
p50/p99 (ms) with an idle worker already running (each library's own worker
command, one slot, no-op body), one job at a time. Every phase verifies that
exactly the expected number of jobs ran (``benchmarks.counter``) and fails
loudly otherwise. Figures are medians of ``--repeat`` runs; ratios are exqueue's
figure over each peer's on the same backend. Throughput with a worker running
jobs is ``python -m benchmarks.run`` (like for like).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

from tabulate import tabulate

from benchmarks import common, matrix
from benchmarks.common import Adapter, BenchError, Phase
from benchmarks.targets import verdict


def adapters() -> dict[str, Callable[[], Adapter]]:
    """Every adapter by key, exqueue's first; a library that fails to import is skipped."""
    from benchmarks import exq
    from benchmarks.peers import PEERS

    found: dict[str, Callable[[], Adapter]] = {}
    for cls in [*exq.ADAPTERS, *PEERS]:
        found[f"{cls.library}-{cls.backend}"] = cls
    return found


def timed_rate(n: int, work: Callable[[], None]) -> float:
    # Garbage left by an earlier phase (or library) is collected now, not on this
    # phase's clock; the collector stays on while it runs.
    gc.collect()
    start = time.perf_counter()
    work()
    return n / (time.perf_counter() - start)


def run_once(adapter: Any, args: argparse.Namespace, root: str) -> dict[str, Any]:
    n = args.jobs
    out: dict[str, Any] = {}
    adapter.setup()
    try:
        # 1. enqueue one by one, worker stopped
        def one_by_one() -> None:
            for i in range(n):
                adapter.enqueue_one(i)

        out["enqueue"] = timed_rate(n, one_by_one)
        # 2. batch enqueue, where the library has one
        if adapter.batch:
            adapter.clear()

            def batches() -> None:
                for start in range(0, n, args.batch_size):
                    adapter.enqueue_batch(range(start, min(start + args.batch_size, n)))

            out["batch"] = timed_rate(n, batches)
        # 3. latency with an idle worker running: the library's own command, one
        #    slot, no-op body, as in the like-for-like matrix
        adapter.clear()
        phase = Phase(root, "latency")
        lib = matrix.BY_KEY.get(adapter.key)
        config = matrix.Config(lib, 1, "noop") if lib else None
        adapter.start_worker(config, 0)  # type: ignore[arg-type]  # memory: no command
        # latency with the idle worker running
        try:
            out["latencies"] = latency(adapter, phase, args)
        finally:
            adapter.stop_worker()
        expected = len(out["latencies"]) + 1  # + the warm-up job
        phase.verify(expected, f"{adapter.key} latency")
    finally:
        adapter.teardown()
    lat = sorted(out.pop("latencies"))
    out["samples"] = len(lat)
    out["p50"] = percentile(lat, 50)
    out["p99"] = percentile(lat, 99)
    return out


def latency(adapter: Any, phase: Phase, args: argparse.Namespace) -> list[float]:
    """Enqueue one job at a time; each job records its own start on the shared clock."""
    # Let the worker start and settle: the first job waits for it.
    warm = 10_000_000
    adapter.enqueue_one(warm)
    common.wait_until(
        lambda: phase.totals().last_arg == warm,
        60,
        f"{adapter.key} worker to start",
        check=adapter.check_worker,
    )
    time.sleep(0.2)
    samples: list[float] = []
    budget = time.monotonic() + args.latency_budget
    for i in range(args.latency_samples):
        marker = warm + 1 + i
        start = time.perf_counter()
        adapter.enqueue_one(marker)
        deadline = time.monotonic() + 30
        while (got := phase.totals()).last_arg != marker:
            if time.monotonic() > deadline:
                adapter.check_worker()
                raise BenchError(f"{adapter.key}: latency job {marker} did not start in 30s")
            time.sleep(0.0002)
        got = phase.totals()  # read again: the slot may have been read mid-write
        samples.append((got.last_start - start) * 1000)
        if time.monotonic() > budget:
            break
    return samples  # the warm-up job is not a sample


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    k = (len(values) - 1) * pct / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


METRICS = ("enqueue", "batch", "p50", "p99")


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for metric in (*METRICS, "samples"):
        values = [r[metric] for r in runs if r.get(metric) is not None]
        merged[metric] = statistics.median(values) if values else None
    merged["runs"] = len(runs)
    return merged


def fmt_rate(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}"


def fmt_ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def table(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    rows = []
    for key, r in results.items():
        cls = meta[key]
        if "error" in r:
            rows.append([cls.library, cls.backend, "FAILED: " + r["error"][:60]])
            continue
        runs = f"{r['runs']}" + (f" ({len(r['failed_runs'])} failed)" if "failed_runs" in r else "")
        rows.append(
            [
                cls.library,
                cls.backend,
                fmt_rate(r["enqueue"]),
                fmt_rate(r["batch"]),
                fmt_ms(r["p50"]),
                fmt_ms(r["p99"]),
                verdict(cls.backend, r) if cls.library == "exqueue" else "",
                runs,
            ]
        )
    headers = [
        "library",
        "backend",
        "enqueue/s",
        "batch/s",
        "p50 ms",
        "p99 ms",
        "target met?",
        "runs",
    ]
    return tabulate(rows, headers, tablefmt="github", disable_numparse=True)


def ratios(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    """exqueue's figure over each peer's, on the same backend (latency: lower is better)."""
    rows = []
    for key, r in results.items():
        cls = meta[key]
        ours = results.get(f"exqueue-{cls.backend}")
        if cls.library == "exqueue" or not ours or "error" in r or "error" in ours:
            continue
        row = [f"exqueue / {cls.library}", cls.backend]
        for metric in ("enqueue", "batch", "p50", "p99"):
            a, b = ours.get(metric), r.get(metric)
            row.append("—" if not a or not b else f"{a / b:.2f}×")
        rows.append(row)
    headers = [
        "ratio",
        "backend",
        "enqueue",
        "batch",
        "p50 (<1 better)",
        "p99 (<1 better)",
    ]
    return tabulate(rows, headers, tablefmt="github", disable_numparse=True)


def main(argv: list[str] | None = None) -> int:
    parser = common.arguments("benchmarks.enqueue", __doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--only", default="", help="comma-separated keys, e.g. exqueue-redis,rq-redis"
    )
    parser.add_argument("--skip", default="", help="comma-separated keys to leave out")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--latency-samples", type=int, default=1000)
    parser.add_argument(
        "--latency-budget",
        type=float,
        default=20.0,
        help="stop sampling latency after this many seconds",
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--list", action="store_true", help="list the adapter keys and exit")
    args = parser.parse_args(argv)

    available = adapters()
    if args.list:
        print("\n".join(available))
        return 0
    keys = [k for k in (args.only.split(",") if args.only else available) if k]
    keys = [k for k in keys if k not in set(args.skip.split(","))]
    unknown = [k for k in keys if k not in available]
    if unknown:
        parser.error(f"unknown adapters {unknown}; known: {', '.join(available)}")
    common.ensure_databases()
    commit = common.git_commit()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())

    results: dict[str, dict[str, Any]] = {}
    raw: dict[str, list[dict[str, Any]]] = {}
    errors: dict[str, list[str]] = {}
    meta = {k: available[k] for k in keys}
    failed = False
    root = tempfile.mkdtemp(prefix="exqbench-")
    try:
        # Repeats interleave libraries, so a burst of load from the shared machine
        # does not land on one library only.
        for rep in range(args.repeat):
            for key in keys:
                print(f"[{rep + 1}/{args.repeat}] {key} ...", file=sys.stderr, flush=True)
                run_root = os.path.join(root, f"{key}-{rep}")
                os.makedirs(run_root)
                try:
                    figures = run_once(available[key](), args, run_root)
                except Exception as exc:
                    traceback.print_exc()
                    errors.setdefault(key, []).append(f"{type(exc).__name__}: {exc}")
                    failed = True
                    continue
                shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}
                print(
                    f"    {json.dumps(shown)}",
                    file=sys.stderr,
                    flush=True,
                )
                raw.setdefault(key, []).append(figures)
        for key in keys:
            if raw.get(key):
                results[key] = median_of(raw[key])
                if key in errors:
                    results[key]["failed_runs"] = errors[key]
            else:
                results[key] = {"error": errors[key][0]}
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print()
    print(
        f"exqueue benchmarks: {args.jobs:,} no-op jobs, medians of {args.repeat} runs, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, exqueue {commit}, "
        f"started {started}"
    )
    print()
    print(table(results, meta))
    print()
    print(ratios(results, meta))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "args": vars(args),
                    "commit": commit,
                    "started": started,
                    "results": results,
                    "runs": raw,
                },
                f,
                indent=2,
            )
    if failed:
        print(
            "\nSOME RUNS FAILED (see above): their figures are not in the table.", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
