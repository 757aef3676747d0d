"""arq on Redis: the ``arq`` worker, one process, ``max_jobs`` N (asyncio). No batch enqueue.

Results are not kept (``keep_result=0``) and a failed job is not retried, as for
the other libraries. arq takes its concurrency from ``WorkerSettings``, which
reads ``$EXQ_BENCH_CONCURRENCY``. The harness enqueues from one private event loop.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, ClassVar

from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import func

from benchmarks import bodies, common
from benchmarks.matrix import ENV_CONCURRENCY

QUEUE = "exqbench"
REDIS = RedisSettings(host=common.REDIS_HOST, port=common.REDIS_PORT, database=common.REDIS_DB)


async def noop(ctx: Any, n: int) -> None:
    await bodies.arun(n)


class WorkerSettings:
    functions: ClassVar[list[Any]] = [func(noop, name="noop", keep_result=0, max_tries=1)]
    redis_settings = REDIS
    queue_name = QUEUE
    max_jobs = int(os.environ.get(ENV_CONCURRENCY, "1"))


class ArqAdapter(common.RedisPeer):
    library = "arq"

    def setup(self) -> None:
        super().setup()
        self.loop = asyncio.new_event_loop()
        self.pool = self.loop.run_until_complete(create_pool(REDIS))

    def enqueue_one(self, n: int) -> None:
        self.loop.run_until_complete(self.pool.enqueue_job("noop", n, _queue_name=QUEUE))

    def teardown(self) -> None:
        self.loop.run_until_complete(self.pool.aclose())
        self.loop.close()
        super().teardown()


ADAPTER = ArqAdapter
