"""Async worker types: coroutines on the worker's event loop, beside thread jobs.

Each rule on every backend: an async job runs (awaited, never counted a success
otherwise), ``concurrency`` bounds how many coroutines run at once, sync and
async types share one queue and one drain, an async job's failure follows the
retry policy, and a job that blocks the loop for three leases loses no lease.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import exqueue
from exqueue import Fixed
from exqueue.storage import JobRecord, NewJob
from tests.support.backends import BackendHandle


def make_queue(backend: BackendHandle, **kwargs: Any) -> exqueue.Queue:
    return exqueue.Queue(backend.open(), poll_interval=0.05, **kwargs)


def test_async_and_sync_jobs_run_in_one_drain(backend: BackendHandle) -> None:
    queue = make_queue(backend)
    seen: list[tuple[str, int, str | None]] = []

    @queue.worker(concurrency=3)
    async def fetch(n: int) -> None:
        await asyncio.sleep(0.01)
        job = exqueue.current_job()
        seen.append(("async", n, job.id if job else None))

    @queue.worker(concurrency=2)
    def crunch(n: int) -> None:
        seen.append(("sync", n, None))

    ids = [fetch.enqueue(n) for n in range(10)]
    for n in range(5):
        crunch.enqueue(n)
    assert queue.drain(timeout=60) == 15
    assert sorted(n for kind, n, _ in seen if kind == "async") == list(range(10))
    assert sorted(n for kind, n, _ in seen if kind == "sync") == list(range(5))
    assert {job_id for kind, _, job_id in seen if kind == "async"} == set(ids)
    assert queue.storage.list_jobs(limit=100) == []
    queue.close()


def test_concurrency_bounds_running_coroutines(backend: BackendHandle) -> None:
    queue = make_queue(backend)
    running = 0
    peak = 0

    @queue.worker(concurrency=4)
    async def job() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    for _ in range(16):
        job.enqueue()
    assert queue.drain(timeout=60) == 16
    assert peak == 4  # all on one loop thread: no lock needed to count
    queue.close()


def test_claims_never_exceed_the_free_slots(backend: BackendHandle) -> None:
    # prefetch=0: a lane's claims (its claimer's and the dispatcher's) ask only
    # for slots no claimed job holds. A job leaves the set below as its body ends,
    # before its slot is freed, so the set can only overstate what the lane holds.
    queue = make_queue(backend)
    storage = queue.storage
    held: set[str] = set()
    peak = 0
    lock = threading.Lock()
    real_claim = storage.claim

    def claim(*args: Any, **kwargs: Any) -> list[JobRecord]:
        nonlocal peak
        records = real_claim(*args, **kwargs)
        with lock:
            held.update(record.id for record in records)
            peak = max(peak, len(held))
        return records

    storage.claim = claim  # type: ignore[method-assign]

    @queue.worker(concurrency=3)
    async def job(n: int) -> None:
        await asyncio.sleep(0.002 * (n % 3))
        current = exqueue.current_job()
        assert current is not None
        with lock:
            held.discard(current.id)

    queue.enqueue_many([job.call(n) for n in range(60)])
    assert queue.drain(timeout=60) == 60
    assert peak == 3
    queue.close()


def test_a_large_async_lane_claims_a_quarter_of_its_slots_at_a_time(
    backend: BackendHandle,
) -> None:
    # A claim of every free slot made each job wait for the claim's last row, and the
    # lane ran in waves: it claims at most a quarter of its slots (at least 100) per call.
    queue = make_queue(backend)
    storage = queue.storage
    asked: list[int] = []
    real_claim = storage.claim

    def claim(worker: str, limit: int, **kwargs: Any) -> list[JobRecord]:
        asked.append(limit)
        return real_claim(worker, limit, **kwargs)

    storage.claim = claim  # type: ignore[method-assign]

    @queue.worker(concurrency=800)
    async def job(n: int) -> None:
        await asyncio.sleep(0.01)

    queue.enqueue_many([job.call(n) for n in range(800)])
    assert queue.drain(timeout=60) == 800
    assert max(asked) == 200
    assert len([limit for limit in asked if limit > 0]) >= 4
    queue.close()


def test_stop_ends_the_feeder_thread(backend: BackendHandle) -> None:
    queue = make_queue(backend)

    @queue.worker(name="aio-threads", concurrency=3)
    async def job() -> None:
        await asyncio.sleep(0)

    for _ in range(10):
        job.enqueue()
    assert queue.drain(timeout=60) == 10
    queue.close()
    left = [
        thread.name
        for thread in threading.enumerate()
        if thread.name.startswith("exqueue-aio-threads-")
    ]
    assert left == []


def test_an_async_failure_is_retried_then_dead(backend: BackendHandle) -> None:
    queue = make_queue(backend)
    attempts: list[int] = []

    @queue.worker(max_retries=1, backoff=Fixed(0))
    async def flaky() -> None:
        job = exqueue.current_job()
        assert job is not None
        attempts.append(job.attempt)
        await asyncio.sleep(0)
        raise RuntimeError("boom")

    job_id = flaky.enqueue()
    queue.drain(timeout=60)
    record = queue.storage.get(job_id)
    assert record is not None and record.state == "dead" and record.attempt == 2
    assert "RuntimeError: boom" in record.errors[-1]
    assert attempts == [1, 2]
    queue.close()


def test_an_async_type_returning_no_awaitable_is_a_failure(backend: BackendHandle) -> None:
    queue = make_queue(backend)

    class Odd:
        async def __call__(self) -> None:
            pass

    odd = Odd()
    worker = queue.worker(name="odd", max_retries=0)(odd)
    assert worker.is_async
    worker.fn = lambda: 42  # a wrapper that lost the coroutine
    job_id = worker.enqueue()
    queue.drain(timeout=60)
    record = queue.storage.get(job_id)
    assert record is not None and record.state == "dead"
    assert "not an awaitable" in record.errors[-1]
    queue.close()


def test_a_job_blocking_the_loop_for_three_leases_loses_no_lease(backend: BackendHandle) -> None:
    lease = 0.5
    queue = make_queue(backend, lease=lease)
    done: list[str] = []

    @queue.worker(concurrency=3, max_retries=0)
    async def blocker() -> None:
        time.sleep(3 * lease)  # holds the event loop: no coroutine runs meanwhile
        done.append("blocker")

    @queue.worker(concurrency=3, max_retries=0)
    async def patient(n: int) -> None:
        await asyncio.sleep(0.01)
        done.append(f"patient{n}")

    @queue.worker(concurrency=1, max_retries=0)
    def threaded() -> None:
        time.sleep(3 * lease)  # a thread job running alongside, same rule
        done.append("threaded")

    blocker.enqueue()
    for n in range(3):
        patient.enqueue(n)
    threaded.enqueue()
    assert queue.drain(timeout=60) == 5
    # max_retries=0: a lost lease would have made a job dead with "worker lost".
    assert queue.storage.list_jobs(limit=100) == []
    assert sorted(done) == ["blocker", "patient0", "patient1", "patient2", "threaded"]
    queue.close()


def test_run_and_stop_with_async_jobs(backend: BackendHandle) -> None:
    queue = make_queue(backend)
    finished = threading.Event()

    @queue.worker
    async def job() -> None:
        await asyncio.sleep(0.01)
        finished.set()

    queue.start()
    try:
        job.enqueue()
        assert finished.wait(30)
    finally:
        queue.stop(timeout=10)
    deadline = time.monotonic() + 10
    while queue.storage.list_jobs(limit=10) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert queue.storage.list_jobs(limit=10) == []
    queue.close()


def test_stop_hands_back_a_running_async_job(backend: BackendHandle) -> None:
    queue = make_queue(backend)
    started = threading.Event()

    @queue.worker
    async def slow() -> None:
        started.set()
        await asyncio.sleep(30)

    job_id = slow.enqueue()
    queue.start()
    assert started.wait(30)
    queue.stop(timeout=0.2)
    record = queue.storage.get(job_id)
    assert record is not None and record.state == "waiting" and record.attempt == 0
    queue.close()


def test_an_undecodable_async_job_dies_and_the_batch_around_it_runs(
    backend: BackendHandle,
) -> None:
    # Feeders decode a claimed batch off the loop: one bad payload in it must cost
    # only its own job, and every job still sees its own context.
    storage = backend.open()
    queue = exqueue.Queue(storage, poll_interval=0.05)
    seen: dict[int, tuple[str, int, dict[str, str]]] = {}

    @queue.worker(name="fetch", concurrency=20, max_retries=2)
    async def fetch(n: int) -> None:
        job = exqueue.current_job()
        assert job is not None
        await asyncio.sleep(0)
        seen[n] = (job.id, job.attempt, dict(job.meta))

    ids = {fetch.enqueue(n): n for n in range(5)}
    storage.enqueue([NewJob("bad-1", "fetch", b"!not json", 0.0, 0.0, 3)])
    ids.update({fetch.enqueue(n): n for n in range(5, 10)})
    assert queue.drain(timeout=60) == 11
    assert {job_id: n for n, (job_id, _, _) in seen.items()} == ids
    assert all(attempt == 1 and meta == {} for _, attempt, meta in seen.values())
    record = storage.get("bad-1")
    assert record is not None and (record.state, record.attempt) == ("dead", 1)
    assert "payload could not be decoded" in record.errors[-1]
    queue.close()


def test_a_started_hook_runs_on_the_loop_before_the_async_job(backend: BackendHandle) -> None:
    queue = make_queue(backend)
    log: list[tuple[str, str, int | None]] = []

    class Started(exqueue.Middleware):
        def started(self, job: JobRecord) -> None:
            log.append(("started", job.id, threading.get_ident()))

    @queue.worker(concurrency=10)
    async def job() -> None:
        current = exqueue.current_job()
        assert current is not None
        log.append(("ran", current.id, threading.get_ident()))
        await asyncio.sleep(0)

    ids = [job.enqueue() for _ in range(5)]
    queue.add_middleware(Started())  # after the queue was built: read per batch
    assert queue.drain(timeout=60) == 5
    for job_id in ids:
        mine = [entry for entry in log if entry[1] == job_id]
        assert [kind for kind, _, _ in mine] == ["started", "ran"]
        assert mine[0][2] == mine[1][2]  # the hook ran on the thread of the job: the loop
    queue.close()
