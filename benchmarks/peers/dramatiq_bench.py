"""Dramatiq on Redis: ``dramatiq`` with one process of 4 threads. No batch enqueue
(a ``group`` sends its messages one by one)."""

from __future__ import annotations

import os
import tempfile

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from benchmarks import common, counter

broker = RedisBroker(host=common.REDIS_HOST, port=common.REDIS_PORT, db=common.REDIS_DB)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="exqbench", max_retries=0)
def noop(n: int) -> None:
    counter.hit(n)


class DramatiqAdapter(common.Adapter):
    library = "dramatiq"
    backend = "redis"
    workers = "4 threads"

    worker: common.WorkerProcess | None = None

    def setup(self) -> None:
        common.flush_bench_redis()

    clear = setup

    def enqueue_one(self, n: int) -> None:
        noop.send(n)

    def start_worker(self) -> None:
        self.worker = common.WorkerProcess(
            [common.venv_bin("dramatiq"), "benchmarks.peers.dramatiq_bench", "-p", "1", "-t", "4"],
            log_path=os.path.join(tempfile.gettempdir(), "exqbench-dramatiq.log"),
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


ADAPTER = DramatiqAdapter
