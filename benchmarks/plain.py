"""The floor: the same body run by plain threads or asyncio tasks, with no queue.

    python -m benchmarks.plain threads|asyncio

Started by the harness as its own process, like every library's worker, with
``$EXQ_BENCH_CONCURRENCY`` slots, ``$EXQ_BENCH_BODY`` and ``$EXQ_BENCH_JOBS``.
Slot ``i`` runs jobs ``i, i + c, i + 2c, ...`` (no shared queue, no lock), so
what it reaches is what any queue library could reach at that concurrency in one
process. It then waits to be stopped (SIGTERM), as a worker would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading

from benchmarks import bodies, common
from benchmarks.matrix import ENV_CONCURRENCY, ENV_JOBS


class Floor(common.Adapter):
    """The harness's side of a floor: nothing to enqueue, the process knows its jobs."""

    library = "floor"
    enqueues = False

    def enqueue_one(self, n: int) -> None:
        pass


class ThreadsFloor(Floor):
    backend = "threads"


class AsyncioFloor(Floor):
    backend = "asyncio"


FLOORS: list[type[common.Adapter]] = [ThreadsFloor, AsyncioFloor]


def threads(concurrency: int, jobs: int) -> None:
    def slot(i: int) -> None:
        for n in range(i, jobs, concurrency):
            bodies.run(n)

    workers = [threading.Thread(target=slot, args=(i,)) for i in range(concurrency)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()


async def tasks(concurrency: int, jobs: int) -> None:
    async def slot(i: int) -> None:
        for n in range(i, jobs, concurrency):
            await bodies.arun(n)

    await asyncio.gather(*(slot(i) for i in range(concurrency)))


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("threads", "asyncio"):
        print("usage: python -m benchmarks.plain threads|asyncio", file=sys.stderr)
        return 2
    concurrency = int(os.environ[ENV_CONCURRENCY])
    jobs = int(os.environ[ENV_JOBS])
    if argv[0] == "threads":
        threads(concurrency, jobs)
    else:
        asyncio.run(tasks(concurrency, jobs))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
