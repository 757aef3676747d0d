"""Celery on Redis: ``celery worker`` with the solo pool (one job at a time, in-process).

Results are ignored (no result backend); no gossip, mingle or heartbeat. No
batch enqueue: a ``group`` publishes its messages one by one.
"""

from __future__ import annotations

from celery import Celery

from benchmarks import common, counter

app = Celery("exqbench", broker=common.REDIS_URL)
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    task_default_queue="exqbench",
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop(n: int) -> None:
    counter.hit(n)


class CeleryAdapter(common.RedisPeer):
    library = "celery"
    workers = "solo pool"

    def enqueue_one(self, n: int) -> None:
        noop.delay(n)

    def start_worker(self) -> None:
        self.spawn(
            [
                common.venv_bin("celery"),
                "-A",
                "benchmarks.peers.celery_bench",
                "worker",
                "-P",
                "solo",
                "-c",
                "1",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "WARNING",
                "-Q",
                "exqbench",
            ]
        )


ADAPTER = CeleryAdapter
