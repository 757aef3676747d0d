"""Dramatiq on Redis: ``dramatiq`` with one process of N threads. No batch enqueue
(a ``group`` sends its messages one by one)."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from benchmarks import bodies, common

broker = RedisBroker(host=common.REDIS_HOST, port=common.REDIS_PORT, db=common.REDIS_DB)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="exqbench", max_retries=0)
def noop(n: int) -> None:
    bodies.run(n)


class DramatiqAdapter(common.RedisPeer):
    library = "dramatiq"

    def enqueue_one(self, n: int) -> None:
        noop.send(n)


ADAPTER = DramatiqAdapter
