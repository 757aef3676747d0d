"""RQ on Redis: ``rq worker`` with ``SimpleWorker`` (jobs run in the worker process, no fork).

Batch enqueue is ``Queue.enqueue_many`` (one Redis pipeline).
"""

from __future__ import annotations

from collections.abc import Sequence

from redis import Redis
from rq import Queue

from benchmarks import bodies, common

QUEUE = "exqbench"


def noop(n: int) -> None:
    bodies.run(n)


class RQAdapter(common.RedisPeer):
    library = "rq"
    batch = True
    notes = "enqueue_many pipelines a batch"

    def setup(self) -> None:
        super().setup()
        self.conn = Redis(host=common.REDIS_HOST, port=common.REDIS_PORT, db=common.REDIS_DB)
        self.queue = Queue(QUEUE, connection=self.conn)

    def enqueue_one(self, n: int) -> None:
        self.queue.enqueue(noop, n)

    def enqueue_batch(self, ns: Sequence[int]) -> None:
        self.queue.enqueue_many([Queue.prepare_data(noop, (n,)) for n in ns])

    def teardown(self) -> None:
        self.conn.close()
        super().teardown()


ADAPTER = RQAdapter
