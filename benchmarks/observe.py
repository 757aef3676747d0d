"""Cost of outcome history, Prometheus metrics and tracing on drain throughput (issue 17).

    python -m benchmarks.observe [--backends memory,sqlite,redis] [--jobs 5000] [--rounds 5]

For each backend, the same run drains ``--jobs`` no-op jobs (concurrency 4)
under each variant, rounds interleaved so that machine noise falls on all
alike, and prints the median throughput of each and its cost against the bare
one:

- ``bare``: the store's NODES and HISTORY capabilities masked, no middleware;
- ``history``: live nodes and outcome history on (the default on every backend);
- ``+prometheus``: history and ``PrometheusMiddleware`` (its own registry);
- ``+otel``: history and ``TracingMiddleware`` on an SDK ``TracerProvider``
  with a ``BatchSpanProcessor`` and an exporter that drops the spans;
- ``+both``: history, Prometheus and tracing.

Only the drain is timed; the jobs are enqueued through the same queue first
(so the consumer spans have a producer context to extract).

On a shared machine the drains vary by more than the few per cent history
costs, so the run also measures that cost directly, against the bare drain
throughput of the same run: the per-job work the runtime adds (a success
counted in the job thread's own counter), plus the observer's writes spread
over the jobs between them (one ``take`` + ``add_history`` per ``FLUSH_EVERY``
seconds, one ``beat_node`` per third of a lease), as ``history cost / job``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from tabulate import tabulate

from benchmarks import common
from exqueue.middleware import Middleware
from exqueue.storage import HISTORY, NODES, Storage

VARIANTS = ("bare", "history", "+prometheus", "+otel", "+both")
HEADERS = ["backend", "variant", "jobs/s (median)", "range", "cost vs bare", "measured directly"]


def open_storage(backend: str, tmp: str) -> tuple[Storage, Callable[[], None]]:
    tag = f"ob{uuid.uuid4().hex[:8]}"
    if backend == "memory":
        from exqueue_memory import MemoryStorage

        return MemoryStorage(), lambda: None
    if backend == "redis":
        from exqueue_redis import RedisStorage

        redis_storage = RedisStorage(common.REDIS_URL, namespace=tag)
        return redis_storage, redis_storage.destroy
    from exqueue_sql import SQLStorage

    if backend != "sqlite":
        common.ensure_databases()
    url = {"sqlite": f"sqlite:///{tmp}/{tag}.db", "postgres": common.PG_URL}.get(
        backend, common.MYSQL_URL
    )
    sql_storage = SQLStorage(url, prefix=f"{tag}_")
    return sql_storage, sql_storage.destroy


def middlewares(variant: str, cleanups: list[Callable[[], Any]]) -> list[Middleware]:
    chosen: list[Middleware] = []
    if variant in ("+prometheus", "+both"):
        from prometheus_client import CollectorRegistry

        from exqueue.prometheus import PrometheusMiddleware

        chosen.append(PrometheusMiddleware(registry=CollectorRegistry()))
    if variant in ("+otel", "+both"):
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class Drop(SpanExporter):
            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Drop()))
        # Its export thread must not outlive the run and slow the next variant.
        cleanups.append(provider.shutdown)
        from exqueue.otel import TracingMiddleware

        chosen.append(TracingMiddleware(provider))
    return chosen


def one_run(backend: str, variant: str, jobs: int, tmp: str) -> float:
    import exqueue

    storage, destroy = open_storage(backend, tmp)
    cleanups: list[Callable[[], Any]] = []
    try:
        if variant == "bare":
            # Masked: the runtime then keeps no nodes and no history.
            storage.capabilities = frozenset(storage.capabilities - {NODES, HISTORY})
        queue = exqueue.Queue(
            storage, middleware=middlewares(variant, cleanups), poll_interval=0.05
        )

        @queue.worker(name="bench.noop", concurrency=4)
        def noop(n: int) -> None:
            pass

        for start in range(0, jobs, 1000):
            queue.enqueue_many([noop.call(n) for n in range(start, min(start + 1000, jobs))])
        began = time.perf_counter()
        ran = queue.drain()
        elapsed = time.perf_counter() - began
        assert ran == jobs, f"{variant}: drained {ran} of {jobs}"
        return jobs / elapsed
    finally:
        for cleanup in cleanups:
            cleanup()
        destroy()
        storage.close()


def count_success(own: dict[str, list[float]], worker: str, duration: float) -> None:
    # The lines core.Runtime._run runs per success (see exqueue/runtime/core.py).
    counted = own.get(worker)
    if counted is None:
        own[worker] = [1, duration]
    else:
        counted[0] += 1
        counted[1] += duration


def nothing(own: dict[str, list[float]], worker: str, duration: float) -> None:
    pass


def history_cost(backend: str, rate: float, tmp: str) -> float:
    """Seconds of history work per job at ``rate`` jobs/s (see the module docstring)."""
    from exqueue.queue import new_job_id
    from exqueue.runtime.observe import FLUSH_EVERY, Tally
    from exqueue.storage import NodeInfo, SupportsHistory, SupportsNodes

    tally = Tally(time.time)
    own = tally.own()
    n = 200_000
    spent = []
    for fn in (count_success, nothing):
        began = time.perf_counter()
        for _ in range(n):
            fn(own, "bench.noop", 0.001)
        spent.append(time.perf_counter() - began)
    per_job = max(spent[0] - spent[1], 0.0) / n
    storage, destroy = open_storage(backend, tmp)
    try:
        assert isinstance(storage, SupportsHistory) and isinstance(storage, SupportsNodes)
        flushes, beats = [], []
        for _ in range(20):
            tally.add("bench.noop", 1, 0.01)
            own["bench.noop"][0] += 1000
            began = time.perf_counter()
            storage.add_history(tally.take())
            flushes.append(time.perf_counter() - began)
            began = time.perf_counter()
            storage.beat_node(NodeInfo(new_job_id()[:8], "h", 1, 0.0, time.time(), {"w": 4}))
            beats.append(time.perf_counter() - began)
        flush, beat = statistics.median(flushes), statistics.median(beats)
    finally:
        destroy()
        storage.close()
    lease = 30.0
    return per_job + flush / (rate * FLUSH_EVERY) + beat / (rate * lease / 3)


def main(argv: list[str]) -> None:
    parser = common.arguments("benchmarks.observe", __doc__)
    parser.add_argument("--backends", default="memory,sqlite,redis")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    rows: list[list[Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for round_number in range(args.rounds):
                shift = round_number % len(VARIANTS)
                for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                    rates[variant].append(one_run(backend, variant, args.jobs, tmp))
            bare = statistics.median(rates["bare"])
            per_job = history_cost(backend, bare, tmp)
            direct = f"history cost / job {per_job * 1e6:.2f} us = {100 * per_job * bare:.2f} %"
            for variant in VARIANTS:
                rate = statistics.median(rates[variant])
                cost = "" if variant == "bare" else f"{100 * (1 - rate / bare):+.1f} %"
                spread = f"{min(rates[variant]):,.0f}-{max(rates[variant]):,.0f}"
                note = direct if variant == "history" else ""
                rows.append([backend, variant, f"{rate:,.0f}", spread, cost, note])
            print(tabulate(rows[-len(VARIANTS) :], headers=HEADERS))
            sys.stdout.flush()
    print()
    print(f"{args.jobs} jobs per drain, median of {args.rounds} interleaved rounds")
    print(tabulate(rows, headers=HEADERS))


if __name__ == "__main__":
    main(sys.argv[1:])
