"""Celery on Redis: ``celery worker`` with the threads pool of N threads, one process.

Results are ignored (no result backend); no gossip, mingle or heartbeat. No
batch enqueue: a ``group`` publishes its messages one by one.
"""

from __future__ import annotations

import redis
from celery import Celery

if redis.VERSION < (6, 1):
    # kombu's Redis transport refuses older clients when the worker connects.
    raise ImportError(f"Celery's Redis transport needs redis-py >= 6.1, not {redis.__version__}")

from benchmarks import bodies, common

app = Celery("exqbench", broker=common.REDIS_URL)
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    task_default_queue="exqbench",
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop(n: int) -> None:
    bodies.run(n)


class CeleryAdapter(common.RedisPeer):
    library = "celery"

    def enqueue_one(self, n: int) -> None:
        noop.delay(n)


ADAPTER = CeleryAdapter
