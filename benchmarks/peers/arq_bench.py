"""arq on Redis: the ``arq`` worker, one process, ``max_jobs`` N (asyncio). No batch enqueue.

Results are not kept (``keep_result=0``) and a failed job is not retried, as for
the other libraries. arq polls its queue every ``poll_delay`` (0.5 s by default)
and takes at most its free slots per poll, so by default one slot runs 2 jobs/s;
here it polls every 5 ms.

arq pins redis-py below 6 while Celery's Redis transport (kombu) needs 6.1 or
later, so the two cannot share an environment: arq is not in the ``bench`` extra.
``pip install arq`` in a separate environment to measure it (Celery then drops out).
arq takes its concurrency from ``WorkerSettings``, which reads
``$EXQ_BENCH_CONCURRENCY``. The harness enqueues from one private event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, ClassVar

import redis

if redis.VERSION >= (6,):
    raise ImportError(f"arq needs redis-py < 6, this environment has {redis.__version__}")

from arq import create_pool  # noqa: E402
from arq.connections import RedisSettings  # noqa: E402
from arq.worker import func  # noqa: E402

from benchmarks import bodies, common  # noqa: E402
from benchmarks.matrix import ENV_CONCURRENCY  # noqa: E402

QUEUE = "exqbench"
REDIS = RedisSettings(host=common.REDIS_HOST, port=common.REDIS_PORT, database=common.REDIS_DB)


async def noop(ctx: Any, n: int) -> None:
    await bodies.arun(n)


async def quiet(ctx: Any) -> None:
    # arq's command logs two INFO lines per job and has no flag against it; the
    # other libraries run with warnings only.
    logging.getLogger("arq.worker").setLevel(logging.WARNING)


class WorkerSettings:
    functions: ClassVar[list[Any]] = [func(noop, name="noop", keep_result=0, max_tries=1)]
    redis_settings = REDIS
    queue_name = QUEUE
    max_jobs = int(os.environ.get(ENV_CONCURRENCY, "1"))
    poll_delay = 0.005
    on_startup = quiet


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
