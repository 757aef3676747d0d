"""Dramatiq on Redis: ``dramatiq`` with one process of 4 threads. No batch enqueue
(a ``group`` sends its messages one by one)."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from benchmarks import common, counter

broker = RedisBroker(host=common.REDIS_HOST, port=common.REDIS_PORT, db=common.REDIS_DB)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="exqbench", max_retries=0)
def noop(n: int) -> None:
    counter.hit(n)


class DramatiqAdapter(common.RedisPeer):
    library = "dramatiq"
    workers = "4 threads"

    def enqueue_one(self, n: int) -> None:
        noop.send(n)

    def start_worker(self) -> None:
        self.spawn(
            [common.venv_bin("dramatiq"), "benchmarks.peers.dramatiq_bench", "-p", "1", "-t", "4"]
        )


ADAPTER = DramatiqAdapter
