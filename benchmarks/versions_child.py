"""One measurement for ``benchmarks.versions``, run with ``PYTHONPATH`` at one version's tree.

Uses only the public API both versions share (``Queue``, ``worker``,
``enqueue``, ``enqueue_many``, ``drain``) on a store of its own: a fresh table
prefix, Redis namespace or SQLite file, removed afterwards. Prints one JSON line:
jobs/s for one-by-one enqueue, batch enqueue (batches of 500) and an in-process
drain with the given concurrency and a no-op body, each also per CPU second of
this process (``*_cpu``: every thread's CPU time, which a busy machine disturbs
far less than wall time; the server's share is not in it).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import exqueue
from exqueue.job import Call


def open_storage(url: str, tmp: str) -> Any:
    tag = uuid.uuid4().hex[:10]
    if url.startswith("memory"):
        from exqueue_memory import MemoryStorage

        return MemoryStorage()
    if url.startswith("redis"):
        from exqueue_redis import RedisStorage

        return RedisStorage(url, namespace=f"exqver{tag}")
    from exqueue_sql import SQLStorage

    if url == "sqlite":
        return SQLStorage(f"sqlite:///{os.path.join(tmp, 'jobs.db')}")
    return SQLStorage(url, prefix=f"exqver{tag}_")


def noop(n: int) -> None:
    """The job body: nothing, so the figures are the queue's own cost."""


def main() -> None:
    spec = json.loads(sys.argv[1])
    jobs, concurrency = int(spec["jobs"]), int(spec["concurrency"])
    with tempfile.TemporaryDirectory() as tmp:
        storage = open_storage(spec["url"], tmp)
        queue = exqueue.Queue(storage, check_clock=False)
        job = queue.worker(name="bench.versions", concurrency=concurrency, max_retries=0)(noop)
        figures: dict[str, float] = {}
        try:
            with timed(figures, "enqueue", jobs):
                for n in range(jobs):
                    job.enqueue(n)
            with timed(figures, "drain", jobs):
                drain(queue, jobs)
            with timed(figures, "enqueue_many", jobs):
                for low in range(0, jobs, 500):
                    calls = [Call(job.name, (n,)) for n in range(low, min(jobs, low + 500))]
                    queue.enqueue_many(calls)
            drain(queue, jobs)
        finally:
            if hasattr(storage, "destroy"):
                storage.destroy()
            queue.close()
    print(json.dumps(figures))


@contextlib.contextmanager
def timed(figures: dict[str, float], name: str, jobs: int) -> Iterator[None]:
    """Record jobs per wall second as ``name`` and per CPU second as ``name_cpu``."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    figures[name] = jobs / (time.perf_counter() - wall)
    figures[name + "_cpu"] = jobs / max(time.process_time() - cpu, 1e-9)


def drain(queue: exqueue.Queue, jobs: int) -> None:
    ran = queue.drain(timeout=600)
    if ran != jobs:
        raise SystemExit(f"drained {ran} jobs, expected {jobs}")


if __name__ == "__main__":
    main()
