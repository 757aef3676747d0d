"""saq on Redis: the ``saq`` worker with concurrency 4 (asyncio). No batch enqueue.

saq's API is async; the harness drives it from one private event loop.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any

from saq import Queue

from benchmarks import common, counter

queue = Queue.from_url(common.REDIS_URL, name="exqbench")


async def noop(ctx: Any, *, n: int) -> None:
    counter.hit(n)


settings = {"queue": queue, "functions": [noop], "concurrency": 4}


class SaqAdapter(common.Adapter):
    library = "saq"
    backend = "redis"
    workers = "4 concurrent"

    worker: common.WorkerProcess | None = None

    def setup(self) -> None:
        common.flush_bench_redis()
        self.loop = asyncio.new_event_loop()
        self.queue = Queue.from_url(common.REDIS_URL, name="exqbench")
        self.loop.run_until_complete(self.queue.connect())

    def clear(self) -> None:
        common.flush_bench_redis()

    def enqueue_one(self, n: int) -> None:
        self.loop.run_until_complete(self.queue.enqueue("noop", n=n))

    def start_worker(self) -> None:
        self.worker = common.WorkerProcess(
            [common.venv_bin("saq"), "benchmarks.peers.saq_bench.settings"],
            log_path=os.path.join(tempfile.gettempdir(), "exqbench-saq.log"),
        )

    def check_worker(self) -> None:
        if self.worker:
            self.worker.check()

    def stop_worker(self) -> None:
        if self.worker:
            self.worker.stop()
            self.worker = None

    def teardown(self) -> None:
        self.loop.run_until_complete(self.queue.disconnect())
        self.loop.close()
        common.flush_bench_redis()


ADAPTER = SaqAdapter
