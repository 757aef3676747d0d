"""saq on Redis: the ``saq`` worker, one process, concurrency N (asyncio). No batch enqueue.

saq takes its concurrency from the settings, so they read ``$EXQ_BENCH_CONCURRENCY``.
saq's API is async; the harness drives it from one private event loop.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import redis.asyncio
from saq import Queue
from saq.queue.redis import RedisQueue

from benchmarks import bodies, common
from benchmarks.matrix import ENV_CONCURRENCY, pool_size

queue = RedisQueue(
    redis.asyncio.from_url(common.REDIS_URL, max_connections=pool_size()), name="exqbench"
)


async def noop(ctx: Any, *, n: int) -> None:
    await bodies.arun(n)


settings = {
    "queue": queue,
    "functions": [noop],
    "concurrency": int(os.environ.get(ENV_CONCURRENCY, "1")),
}


class SaqAdapter(common.RedisPeer):
    library = "saq"

    def setup(self) -> None:
        super().setup()
        self.loop = asyncio.new_event_loop()
        self.queue = Queue.from_url(common.REDIS_URL, name="exqbench")
        self.loop.run_until_complete(self.queue.connect())

    def enqueue_one(self, n: int) -> None:
        self.loop.run_until_complete(self.queue.enqueue("noop", n=n))

    def teardown(self) -> None:
        self.loop.run_until_complete(self.queue.disconnect())
        self.loop.close()
        super().teardown()


ADAPTER = SaqAdapter
