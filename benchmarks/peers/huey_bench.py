"""Huey on Redis: ``huey_consumer`` with one worker thread.

Huey has no acknowledgements: the consumer pops a task off the Redis list
before running it, so a consumer killed mid-task loses it (exqueue would run it
again). It has no batch enqueue. Results are not stored (``results=False``).
"""

from __future__ import annotations

import os
import signal
import tempfile

from huey import RedisHuey

from benchmarks import common, counter

huey = RedisHuey(
    "exqbench", results=False, host=common.REDIS_HOST, port=common.REDIS_PORT, db=common.REDIS_DB
)


@huey.task()
def noop(n: int) -> None:
    counter.hit(n)


class HueyAdapter(common.Adapter):
    library = "huey"
    backend = "redis"
    workers = "1 thread"
    notes = "no acks (a task popped by a dying consumer is lost); no batch enqueue"

    worker: common.WorkerProcess | None = None

    def setup(self) -> None:
        common.flush_bench_redis()

    clear = setup

    def enqueue_one(self, n: int) -> None:
        noop(n)

    def start_worker(self) -> None:
        self.worker = common.WorkerProcess(
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
            log_path=os.path.join(tempfile.gettempdir(), "exqbench-huey.log"),
        )

    def check_worker(self) -> None:
        if self.worker:
            self.worker.check()

    def stop_worker(self) -> None:
        if self.worker:
            self.worker.stop()
            self.worker = None

    def teardown(self) -> None:
        common.flush_bench_redis()


ADAPTER = HueyAdapter
