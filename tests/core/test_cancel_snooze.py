"""Cancellation and snooze, on every backend that declares them.

A waiting job is cancelled at once (kept dead as "cancelled", or deleted); a
running job, async or thread, is stopped by its holder once the mark reaches it
and kept dead as "cancelled"; a stale holder cannot record over the cancel.
``Snooze`` (raised or returned) runs the job again later without spending an
attempt, up to ``max_snoozes``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import exqueue
from exqueue.storage import CANCEL, CANCELLED, SNOOZE
from tests.support.backends import BackendHandle
from tests.support.procapp import wait_until


def make_queue(backend: BackendHandle, need: str, **kwargs: Any) -> exqueue.Queue:
    storage = backend.open()
    if need not in storage.capabilities:
        pytest.skip(f"{backend.name} does not declare {need}")
    return exqueue.Queue(storage, poll_interval=0.05, lease=0.6, **kwargs)


def test_cancel_a_waiting_job_keeps_or_deletes_it(backend: BackendHandle) -> None:
    queue = make_queue(backend, CANCEL)

    @queue.worker
    def job() -> None:
        pass

    kept, gone = job.enqueue_in(3600), job.enqueue_in(3600)
    assert queue.cancel(kept) == "cancelled"
    assert queue.cancel(gone, delete=True) == "deleted"
    record = queue.storage.get(kept)
    assert record is not None and record.state == "dead" and record.errors == (CANCELLED,)
    assert queue.storage.get(gone) is None
    assert queue.cancel(kept) == "finished"
    with pytest.raises(exqueue.JobNotFoundError):
        queue.cancel(gone)
    assert asyncio.run(queue.acancel(kept, delete=True)) == "deleted"
    queue.close()


@pytest.mark.parametrize("kind", ["async", "thread"])
def test_cancel_a_running_job_stops_it(backend: BackendHandle, kind: str) -> None:
    queue = make_queue(backend, CANCEL)
    started = threading.Event()
    stopped: list[str] = []

    if kind == "async":

        @queue.worker(name="long")
        async def long_async() -> None:
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                stopped.append("cancelled")
                raise

    else:

        @queue.worker(name="long")
        def long_thread() -> None:
            started.set()
            try:
                while True:
                    time.sleep(0.001)
            except exqueue.JobCancelled:
                stopped.append("cancelled")
                raise

    job_id = queue.enqueue("long")
    queue.start()
    try:
        assert started.wait(30)
        # Another process's call: the holder learns it at its next heartbeat.
        other = exqueue.Queue(backend.open() if backend.persistent else queue.storage)
        assert other.cancel(job_id) == "requested"
        wait_until(
            lambda: (r := queue.storage.get(job_id)) is not None and r.state == "dead",
            "the job is dead",
            30,
        )
    finally:
        queue.stop(timeout=5)
    record = queue.storage.get(job_id)
    assert record is not None and record.errors[-1] == CANCELLED
    assert stopped == ["cancelled"]
    queue.close()


def test_a_cancel_mark_dies_with_its_attempt(backend: BackendHandle) -> None:
    storage = backend.open()
    if CANCEL not in storage.capabilities:
        pytest.skip("no CANCEL")
    queue = exqueue.Queue(storage)

    @queue.worker
    def job() -> None:
        pass

    job_id = job.enqueue()
    now = time.time()
    [first] = storage.claim(job.name, 1, now=now, owner="a", token="t1", lease_until=now + 60)
    assert queue.cancel(job_id) == "requested"
    assert storage.cancel_requested("t1", [job_id]) == [job_id]  # type: ignore[attr-defined]
    assert storage.cancel_requested("t2", [job_id]) == []  # type: ignore[attr-defined]
    assert storage.release(job_id, "t1")
    [again] = storage.claim(job.name, 1, now=now, owner="a", token="t2", lease_until=now + 60)
    assert storage.cancel_requested("t2", [job_id]) == []  # type: ignore[attr-defined]
    assert not storage.bury(job_id, "t1", error="stale")  # fenced
    queue.close()


def test_snooze_runs_again_without_spending_an_attempt(backend: BackendHandle) -> None:
    queue = make_queue(backend, SNOOZE, max_snoozes=3)
    runs: list[int] = []

    @queue.worker(max_retries=0)
    async def waits() -> Any:
        job = exqueue.current_job()
        assert job is not None
        runs.append(job.attempt)
        if len(runs) == 1:
            raise exqueue.Snooze(0)
        if len(runs) == 2:
            return exqueue.Snooze(0)
        return None

    @queue.worker(max_retries=0)
    def forever() -> None:
        raise exqueue.Snooze(0)

    waits.enqueue()
    stuck = forever.enqueue()
    queue.drain(timeout=60)
    assert runs == [1, 1, 1]  # attempt 1 each time: snoozes spend none
    record = queue.storage.get(stuck)
    assert record is not None and record.state == "dead" and record.attempt == 1
    assert "snoozed 3 times" in record.errors[-1]
    assert queue.storage.snoozes(stuck) == 3  # type: ignore[attr-defined]
    queue.close()


def test_snooze_delays_the_next_run(backend: BackendHandle) -> None:
    queue = make_queue(backend, SNOOZE)

    @queue.worker
    def later() -> None:
        raise exqueue.Snooze(3600)

    job_id = later.enqueue()
    queue.drain(timeout=60)
    record = queue.storage.get(job_id)
    assert record is not None and record.state == "waiting" and record.attempt == 0
    assert record.run_at > time.time() + 3000
    queue.close()
