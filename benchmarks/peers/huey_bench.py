"""Huey on Redis: ``huey_consumer`` with one worker thread.

Huey has no acknowledgements: the consumer pops a task off the Redis list
before running it, so a consumer killed mid-task loses it (exqueue would run it
again). It has no batch enqueue. Results are not stored (``results=False``).
"""

from __future__ import annotations

import signal

from huey import RedisHuey

from benchmarks import common, counter

huey = RedisHuey(
    "exqbench", results=False, host=common.REDIS_HOST, port=common.REDIS_PORT, db=common.REDIS_DB
)


@huey.task()
def noop(n: int) -> None:
    counter.hit(n)


class HueyAdapter(common.RedisPeer):
    library = "huey"
    workers = "1 thread"
    notes = "no acks (a task popped by a dying consumer is lost); no batch enqueue"

    def enqueue_one(self, n: int) -> None:
        noop(n)

    def start_worker(self) -> None:
        self.spawn(
            [
                common.venv_bin("huey_consumer"),
                "benchmarks.peers.huey_bench.huey",
                "-w",
                "1",
                "-k",
                "thread",
                "-n",
                "-q",
            ],
            stop_signal=signal.SIGINT,  # SIGINT is huey's graceful shutdown
        )


ADAPTER = HueyAdapter
