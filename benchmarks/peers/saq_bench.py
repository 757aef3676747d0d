"""saq on Redis: the ``saq`` worker with concurrency 4 (asyncio). No batch enqueue.

saq's API is async; the harness drives it from one private event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from saq import Queue

from benchmarks import common, counter

queue = Queue.from_url(common.REDIS_URL, name="exqbench")


async def noop(ctx: Any, *, n: int) -> None:
    counter.hit(n)


settings = {"queue": queue, "functions": [noop], "concurrency": 4}


class SaqAdapter(common.RedisPeer):
    library = "saq"
    workers = "4 concurrent"

    def setup(self) -> None:
        super().setup()
        self.loop = asyncio.new_event_loop()
        self.queue = Queue.from_url(common.REDIS_URL, name="exqbench")
        self.loop.run_until_complete(self.queue.connect())

    def enqueue_one(self, n: int) -> None:
        self.loop.run_until_complete(self.queue.enqueue("noop", n=n))

    def start_worker(self) -> None:
        self.spawn([common.venv_bin("saq"), "benchmarks.peers.saq_bench.settings"])

    def teardown(self) -> None:
        self.loop.run_until_complete(self.queue.disconnect())
        self.loop.close()
        super().teardown()


ADAPTER = SaqAdapter
