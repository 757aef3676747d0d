"""Huey on Redis: ``huey_consumer`` with N worker threads (``benchmarks.matrix``).

Huey has no acknowledgements: the consumer pops a task off the Redis list
before running it, so a consumer killed mid-task loses it (exqueue would run it
again). It has no batch enqueue. Results are not stored (``results=False``).
"""

from __future__ import annotations

from huey import RedisHuey

from benchmarks import bodies, common
from benchmarks.matrix import pool_size

huey = RedisHuey(
    "exqbench",
    results=False,
    host=common.REDIS_HOST,
    port=common.REDIS_PORT,
    db=common.REDIS_DB,
    max_connections=pool_size(),
)


@huey.task()
def noop(n: int) -> None:
    bodies.run(n)


class HueyAdapter(common.RedisPeer):
    library = "huey"
    notes = "no acks (a task popped by a dying consumer is lost); no batch enqueue"

    def enqueue_one(self, n: int) -> None:
        noop(n)


ADAPTER = HueyAdapter
