"""The exqueue application the benchmarks run: one worker type taking one int.

``make_queue(url, concurrency)`` builds a queue on the benchmark's own storage
location (its own Redis database and namespace, its own SQL databases). Imported
as an app by a worker process (``exqueue worker --app benchmarks.exq_app:queue``),
it builds ``queue`` from ``$EXQ_BENCH_URL`` and ``$EXQ_BENCH_CONCURRENCY``; the job
runs the body named by ``$EXQ_BENCH_BODY`` (``benchmarks.bodies``; no-op by default),
as an ``async def`` worker type when ``$EXQ_BENCH_ASYNC`` is set.
"""

from __future__ import annotations

import os
from typing import Any

import exqueue
from benchmarks import bodies

NAMESPACE = "exqbench"
PREFIX = "exqbench_"
JOB = "bench.noop"


def make_storage(url: str) -> Any:
    if url.startswith("memory"):
        from exqueue_memory import MemoryStorage

        return MemoryStorage()
    if url.startswith("redis"):
        from exqueue_redis import RedisStorage

        return RedisStorage(url, namespace=NAMESPACE)
    from exqueue_sql import SQLStorage

    return SQLStorage(url, prefix=PREFIX)


def make_queue(storage: Any, concurrency: int = 8, **options: Any) -> exqueue.Queue:
    queue = exqueue.Queue(storage, **options)

    if os.environ.get("EXQ_BENCH_ASYNC"):

        @queue.worker(name=JOB, concurrency=concurrency, max_retries=0)
        async def anoop(n: int) -> None:
            await bodies.arun(n)

        return queue

    # The cpu body holds the GIL: declared so, ``exqueue worker`` without
    # --processes runs a process per CPU (the matrix always passes --processes 1).
    @queue.worker(name=JOB, concurrency=concurrency, max_retries=0, cpu_bound=bodies.BODY == "cpu")
    def noop(n: int) -> None:
        bodies.run(n)

    return queue


def _from_env() -> exqueue.Queue | None:
    url = os.environ.get("EXQ_BENCH_URL")
    if not url:
        return None
    return make_queue(make_storage(url), int(os.environ.get("EXQ_BENCH_CONCURRENCY", "8")))


queue = _from_env()
