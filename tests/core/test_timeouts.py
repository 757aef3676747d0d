"""Per-job timeouts, on every backend.

An async job past its timeout is cancelled; a thread job gets JobTimeout raised
in its thread; a thread stuck in C past the grace period is abandoned, its
attempt recorded as "timed out after N s" while the worker finishes its other
jobs. The retry policy applies as to any failure. Timeouts come from the worker
type's default or from ``fn.options(timeout=...)``.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import exqueue
from exqueue import Fixed
from tests.support.backends import BackendHandle
from tests.support.procapp import wait_until


def make_queue(backend: BackendHandle) -> exqueue.Queue:
    return exqueue.Queue(backend.open(), poll_interval=0.05, timeout_grace=0.3)


def test_an_async_job_past_its_timeout_is_cancelled_and_retried(backend: BackendHandle) -> None:
    queue = make_queue(backend)
    cancelled: list[int] = []

    @queue.worker(timeout=0.2, max_retries=1, backoff=Fixed(0))
    async def hangs() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            job = exqueue.current_job()
            cancelled.append(job.attempt if job else 0)
            raise

    @queue.worker
    async def quick() -> None:
        await asyncio.sleep(0)

    job_id = hangs.enqueue()
    quick.options(timeout=5).enqueue()
    queue.drain(timeout=60)
    record = queue.storage.get(job_id)
    assert record is not None and record.state == "dead" and record.attempt == 2
    assert record.errors[-1].endswith("JobTimeout: timed out after 0.2 s")
    assert cancelled == [1, 2]
    assert len(queue.storage.list_jobs(limit=10)) == 1  # quick finished in time
    queue.close()


def test_a_thread_job_gets_the_timeout_raised_in_its_thread(backend: BackendHandle) -> None:
    queue = make_queue(backend)
    stopped: list[str] = []

    @queue.worker(max_retries=0)
    def spins() -> None:
        try:
            while True:  # pure Python: the exception lands at once
                pass
        except exqueue.JobTimeout:
            stopped.append("raised")
            raise

    job_id = spins.options(timeout=0.2).enqueue()
    queue.drain(timeout=60)
    record = queue.storage.get(job_id)
    assert record is not None and record.state == "dead"
    assert "timed out after 0.2 s" in record.errors[-1]
    assert stopped == ["raised"]
    queue.close()


def test_a_thread_stuck_in_c_is_abandoned_and_others_finish(backend: BackendHandle) -> None:
    queue = make_queue(backend)
    done: list[int] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    @queue.worker(concurrency=1, timeout=0.3, max_retries=1, backoff=Fixed(0))
    def reads() -> None:
        with socket.create_connection(server.getsockname()) as conn:
            conn.recv(1)  # blocks in C: nobody ever sends

    @queue.worker(concurrency=1)
    def sleeps_in_c(n: int) -> None:
        time.sleep(0.01)
        done.append(n)

    abandoned: list[int] = []
    queue.on_abandoned = abandoned.append  # exqueue worker replaces its process from here
    job_id = reads.enqueue()
    for n in range(5):
        sleeps_in_c.enqueue(n)
    queue.drain(timeout=60)
    record = queue.storage.get(job_id)
    assert record is not None and record.state == "dead" and record.attempt == 2
    assert all("timed out after 0.3 s" in error for error in record.errors)
    assert sorted(done) == list(range(5))
    # One thread per attempt, each stuck in recv (told just after the drain may end).
    wait_until(lambda: abandoned == [1, 2], "both threads are reported abandoned", 10)
    server.close()
    queue.close()


def test_an_abandoned_thread_that_returns_later_leaves_its_lane_working(
    backend: BackendHandle,
) -> None:
    queue = make_queue(backend)
    ran: list[int] = []

    @queue.worker(concurrency=1, timeout=0.2, max_retries=0)
    def naps(n: int) -> None:
        if n == 0:
            time.sleep(1.0)  # in C: abandoned at about 0.5 s, back at 1.0 s
        ran.append(n)

    abandoned: list[int] = []
    queue.on_abandoned = abandoned.append
    first = naps.enqueue(0)
    queue.start()
    try:
        wait_until(lambda: abandoned == [1], "the napping thread is abandoned", 10)
        time.sleep(1.0)  # the abandoned thread wakes up, finds its job taken and ends
        for n in (1, 2, 3):
            naps.enqueue(n)
        wait_until(lambda: sorted(ran) == [1, 2, 3], "the lane runs the jobs after it", 10)
    finally:
        # On a daemon thread: a lane left locked by the returning thread would hang it.
        stopper = threading.Thread(target=queue.stop, kwargs={"timeout": 5}, daemon=True)
        stopper.start()
        stopper.join(30)
    assert not stopper.is_alive(), "the worker did not stop"
    record = queue.storage.get(first)
    assert record is not None and record.state == "dead"
    assert "timed out after 0.2 s" in record.errors[-1]
    queue.close()


def test_an_abandoned_thread_strands_no_success_of_the_jobs_before_it(
    backend: BackendHandle,
) -> None:
    # A lane of short jobs writes a batch's successes after the batch; a thread
    # abandoned in the middle of one must not take the earlier successes with it.
    queue = make_queue(backend)

    @queue.worker(concurrency=4, max_retries=0)
    def quick(n: int) -> None:
        if n < 0:
            time.sleep(1.5)  # in C, past its timeout: its thread is abandoned

    calls = [quick.call(n) for n in range(400)]
    for long_job in range(-1, -4, -1):
        calls += [quick.call(n) for n in range(1000 + 10 * long_job, 1003 + 10 * long_job)]
        calls.append(quick.options(timeout=0.2).call(long_job))
    ids = queue.enqueue_many(calls)
    stuck = [job_id for job_id, call in zip(ids, calls, strict=True) if call.args[0] < 0]
    queue.drain(timeout=60)
    left = queue.storage.list_jobs(limit=20)
    assert sorted(record.id for record in left) == sorted(stuck)
    assert all(record.state == "dead" for record in left)
    queue.close()
