"""The middleware hooks of issue 16's outcomes: cancelled, timed out, snoozed.

Each is called once, with the job, when the runtime records that outcome.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import exqueue
from exqueue.storage import JobRecord
from exqueue_memory import MemoryStorage
from tests.support.procapp import wait_until


class Recording(exqueue.Middleware):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, Any]] = []

    def cancelled(self, job: JobRecord) -> None:
        self.seen.append(("cancelled", job.id, None))

    def timed_out(self, job: JobRecord, duration: float) -> None:
        self.seen.append(("timed_out", job.id, duration))

    def snoozed(self, job: JobRecord, run_at: float) -> None:
        self.seen.append(("snoozed", job.id, run_at))


def test_snooze_and_timeout_reach_the_middleware() -> None:
    hooks = Recording()
    now = [1_000.0]
    queue = exqueue.Queue(MemoryStorage(), middleware=[hooks], clock=lambda: now[0])
    calls: list[int] = []

    @queue.worker(name="later")
    def later() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise exqueue.Snooze(30)

    @queue.worker(name="slow", timeout=0.2, max_retries=0)
    def slow() -> None:
        while True:
            time.sleep(0.001)

    snoozing, timing_out = later.enqueue(), slow.enqueue()
    queue.drain(timeout=30)
    now[0] += 31
    queue.drain(timeout=30)
    assert ("snoozed", snoozing, 1_030.0) in hooks.seen
    timed = [entry for entry in hooks.seen if entry[0] == "timed_out"]
    assert [entry[1] for entry in timed] == [timing_out] and timed[0][2] >= 0.0
    assert len(calls) == 2 and queue.storage.get(snoozing) is None
    queue.close()


def test_a_cancelled_running_job_reaches_the_middleware() -> None:
    hooks = Recording()
    queue = exqueue.Queue(MemoryStorage(), middleware=[hooks], poll_interval=0.05, lease=0.6)
    started = threading.Event()

    @queue.worker(name="long")
    def long() -> None:
        started.set()
        while True:
            time.sleep(0.001)

    job_id = queue.enqueue("long")
    queue.start()
    try:
        assert started.wait(30)
        assert queue.cancel(job_id) == "requested"
        wait_until(lambda: hooks.seen, "the cancelled hook", 30)
    finally:
        queue.stop(timeout=5)
    assert hooks.seen == [("cancelled", job_id, None)]
    queue.close()
