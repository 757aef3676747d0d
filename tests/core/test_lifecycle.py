"""The job state machine of SPEC §2, driven through the public Queue on every backend.

Time is a fake clock: no test sleeps to wait out a backoff or a lease.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

import exqueue
from exqueue.storage import WORKER_LOST, NewJob
from tests.support.backends import BackendHandle
from tests.support.clock import FakeClock


@pytest.fixture
def queue(storage: exqueue.Storage, clock: FakeClock) -> exqueue.Queue:
    return exqueue.Queue(storage, clock=clock, lease=30.0, node="node-a", poll_interval=0.05)


def test_enqueue_persists_a_waiting_job_before_returning(queue: exqueue.Queue) -> None:
    @queue.worker(name="app.sync")
    def sync(doc_id: int, lang: str = "en") -> None: ...

    job_id = sync.enqueue(42, lang="sv")
    job = queue.get(job_id)
    assert job is not None
    assert (job.state, job.attempt, job.max_attempts) == ("waiting", 0, 6)
    assert (job.worker, job.args, job.kwargs) == ("app.sync", (42,), {"lang": "sv"})
    assert job.errors == () and job.last_error is None


def test_success_removes_the_job(queue: exqueue.Queue) -> None:
    seen = []

    @queue.worker(name="ok")
    def ok(x: int) -> None:
        seen.append(x)

    job_id = ok.enqueue(7)
    assert queue.drain() == 1
    assert seen == [7]
    assert queue.get(job_id) is None
    assert queue.jobs() == []


def test_failure_retries_after_the_fixed_delay_and_records_the_error(
    queue: exqueue.Queue, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    calls = []

    @queue.worker(name="flaky", max_retries=2, backoff=exqueue.Fixed(10))
    def flaky() -> None:
        calls.append(clock())
        if len(calls) == 1:
            raise ValueError("first try fails")

    job_id = flaky.enqueue()
    with caplog.at_level(logging.INFO, logger="exqueue"):
        queue.drain()
    job = queue.get(job_id)
    assert job is not None
    assert (job.state, job.attempt) == ("waiting", 1)
    assert job.run_at.timestamp() == pytest.approx(clock() + 10)
    assert job.last_error is not None and "ValueError: first try fails" in job.last_error
    assert any("retrying in 10s" in r.message and r.levelno == logging.INFO for r in caplog.records)

    clock.advance(9)
    assert queue.drain() == 0, "the retry must wait for its backoff"
    clock.advance(1)
    assert queue.drain() == 1
    assert queue.get(job_id) is None
    assert len(calls) == 2


def test_default_policy_is_five_retries_thirty_seconds_apart(
    queue: exqueue.Queue, clock: FakeClock
) -> None:
    @queue.worker(name="always")
    def always() -> None:
        raise RuntimeError("nope")

    job_id = always.enqueue()
    for attempt in range(1, 6):
        assert queue.drain() == 1
        job = queue.get(job_id)
        assert job is not None and (job.state, job.attempt) == ("waiting", attempt)
        assert job.run_at.timestamp() == pytest.approx(clock() + 30)
        clock.advance(30)
    assert queue.drain() == 1
    job = queue.get(job_id)
    assert job is not None and (job.state, job.attempt, len(job.errors)) == ("dead", 6, 6)


def test_exponential_backoff_is_applied_per_attempt(queue: exqueue.Queue, clock: FakeClock) -> None:
    @queue.worker(name="exp", max_retries=4, backoff=exqueue.Exponential(2, 3, cap=20))
    def exp() -> None:
        raise RuntimeError("x")

    job_id = exp.enqueue()
    delays = []
    for _ in range(4):
        queue.drain()
        job = queue.get(job_id)
        assert job is not None
        delays.append(round(job.run_at.timestamp() - clock(), 6))
        clock.advance(delays[-1])
    assert delays == [2, 6, 18, 20]


def test_dead_job_is_kept_and_reporters_fire_only_then(
    queue: exqueue.Queue, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    reports: list[tuple[exqueue.Job, BaseException | None]] = []
    queue.on_dead(lambda job, exc: reports.append((job, exc)))

    @queue.worker(name="doomed", max_retries=1, backoff=exqueue.Fixed(5))
    def doomed() -> None:
        raise KeyError("missing thing")

    job_id = doomed.enqueue()
    queue.drain()
    assert reports == [], "a retry is not a death"
    clock.advance(5)
    with caplog.at_level(logging.ERROR, logger="exqueue"):
        queue.drain()
    assert len(reports) == 1
    job, exc = reports[0]
    assert job.id == job_id and job.state == "dead" and isinstance(exc, KeyError)
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)
    clock.advance(3600)
    assert queue.drain() == 0
    dead = queue.jobs(state="dead")
    assert [d.id for d in dead] == [job_id]
    assert len(dead[0].errors) == 2
    assert len(reports) == 1


def test_manual_retry_requeues_a_dead_job_as_a_new_job(
    queue: exqueue.Queue, clock: FakeClock
) -> None:
    fail = [True]

    @queue.worker(name="fixable", max_retries=0)
    def fixable() -> None:
        if fail[0]:
            raise RuntimeError("broken")

    old_id = fixable.enqueue()
    queue.drain()
    fail[0] = False
    new_id = queue.retry(old_id)
    assert new_id != old_id
    assert queue.get(old_id) is None
    job = queue.get(new_id)
    assert job is not None and (job.state, job.attempt, job.errors) == ("waiting", 0, ())
    assert queue.drain() == 1
    assert queue.get(new_id) is None
    with pytest.raises(exqueue.JobNotFoundError):
        queue.retry(old_id)


def test_retry_refuses_a_job_that_is_not_dead(queue: exqueue.Queue) -> None:
    @queue.worker(name="w")
    def w() -> None: ...

    job_id = w.enqueue()
    with pytest.raises(exqueue.JobNotDeadError):
        queue.retry(job_id)
    assert queue.get(job_id) is not None


def test_delete_removes_waiting_and_dead_and_refuses_running(
    queue: exqueue.Queue, storage: exqueue.Storage, clock: FakeClock
) -> None:
    @queue.worker(name="d", max_retries=0)
    def d() -> None:
        raise RuntimeError("x")

    waiting_id = d.enqueue_in(100)
    dead_id = d.enqueue()
    queue.drain()
    running_id = d.enqueue()
    claimed = storage.claim("d", 1, now=clock(), owner="n", token="t", lease_until=clock() + 30)
    assert [r.id for r in claimed] == [running_id]

    assert queue.delete(waiting_id) is True
    assert queue.delete(dead_id) is True
    with pytest.raises(exqueue.JobRunningError):
        queue.delete(running_id)
    assert queue.get(running_id) is not None
    assert queue.delete("no-such-id") is False
    assert queue.get(waiting_id) is None and queue.get(dead_id) is None


def test_graceful_stop_releases_unfinished_jobs_without_counting_the_attempt(
    storage: exqueue.Storage, clock: FakeClock
) -> None:
    queue = exqueue.Queue(storage, clock=clock, node="stopper", poll_interval=0.02)
    started, finish = threading.Event(), threading.Event()

    @queue.worker(name="long")
    def long() -> None:
        started.set()
        finish.wait(10)

    job_id = long.enqueue()
    queue.start()
    try:
        assert started.wait(10)
    finally:
        queue.stop(timeout=0.1)
    job = queue.get(job_id)
    assert job is not None and (job.state, job.attempt) == ("waiting", 0)
    finish.set()  # the abandoned thread's late success must not remove the job
    threading.Event().wait(0.2)
    job = queue.get(job_id)
    assert job is not None and job.state == "waiting"


def test_expired_lease_is_recovered_by_another_node(
    storage: exqueue.Storage, clock: FakeClock
) -> None:
    lost = exqueue.Queue(storage, clock=clock, node="lost", lease=10)
    survivor = exqueue.Queue(storage, clock=clock, node="survivor", lease=10)
    ran = []
    for q in (lost, survivor):
        q.worker(name="job", max_retries=1)(lambda: ran.append(True))

    job_id = lost.enqueue("job")
    claim = storage.claim(
        "job", 1, now=clock(), owner="lost", token="tok", lease_until=clock() + 10
    )
    assert len(claim) == 1
    assert survivor.drain() == 0, "a held lease is not taken"
    clock.advance(10)
    assert survivor.drain() == 1
    assert ran == [True]
    assert storage.complete(job_id, "tok") is False, "the lost holder is fenced off"


def test_expired_lease_on_the_last_attempt_makes_the_job_dead(
    storage: exqueue.Storage, clock: FakeClock
) -> None:
    survivor = exqueue.Queue(storage, clock=clock, node="survivor", lease=10)
    reports: list[str] = []
    survivor.on_dead(lambda job, exc: reports.append(job.id))
    survivor.worker(name="job", max_retries=0)(lambda: None)
    job_id = survivor.enqueue("job")
    storage.claim("job", 1, now=clock(), owner="lost", token="tok", lease_until=clock() + 10)
    clock.advance(11)
    survivor.drain()
    job = survivor.get(job_id)
    assert job is not None and job.state == "dead"
    assert job.last_error == WORKER_LOST
    assert reports == [job_id]


def test_stable_node_name_reclaims_its_own_jobs_at_start(
    storage: exqueue.Storage, clock: FakeClock
) -> None:
    queue = exqueue.Queue(storage, clock=clock, node="stable-1", lease=60)
    ran = []
    queue.worker(name="job")(lambda: ran.append(1))
    job_id = queue.enqueue("job")
    storage.claim("job", 1, now=clock(), owner="stable-1", token="old", lease_until=clock() + 60)
    assert queue.drain() == 1, "the lease has not expired, but it is this node's own"
    assert ran == [1] and queue.get(job_id) is None


def test_restart_keeps_every_job_and_its_attempts(backend: BackendHandle, clock: FakeClock) -> None:
    storage = backend.open()
    queue = exqueue.Queue(storage, clock=clock)

    @queue.worker(name="w", max_retries=0)
    def w() -> None:
        raise RuntimeError("dies")

    dead_id = w.enqueue()
    queue.drain()
    waiting_id = w.enqueue()
    scheduled_id = w.enqueue_in(60)
    running_id = queue.enqueue_many([w.call()])[0]
    storage.claim("w", 5, now=clock(), owner="x", token="t", lease_until=clock() + 30)
    storage.close()

    reopened = exqueue.Queue(backend.reopen(), clock=clock)
    states = {j.id: (j.state, j.attempt) for j in reopened.jobs()}
    assert states == {
        dead_id: ("dead", 1),
        waiting_id: ("running", 1),
        running_id: ("running", 1),
        scheduled_id: ("waiting", 0),
    }
    stats = reopened.stats()["w"]
    assert (stats.waiting, stats.scheduled, stats.running, stats.dead) == (0, 1, 2, 1)


def test_unencodable_arguments_raise_and_store_nothing(queue: exqueue.Queue) -> None:
    @queue.worker(name="w")
    def w(x: Any) -> None: ...

    with pytest.raises(exqueue.SerializationError, match="cannot encode"):
        w.enqueue(object())
    with pytest.raises(exqueue.SerializationError):
        queue.enqueue_many([w.call(1), w.call(lambda: None)])
    assert queue.jobs() == []


def test_unknown_worker_name_is_a_clear_error_on_enqueue(queue: exqueue.Queue) -> None:
    with pytest.raises(exqueue.UnknownWorkerError, match="no worker named 'app.nope'"):
        queue.enqueue("app.nope", 1)
    assert queue.jobs() == []


def test_job_of_an_unregistered_worker_stays_waiting_and_shows_in_stats(
    queue: exqueue.Queue,
) -> None:
    queue.worker(name="known")(lambda: None)
    [job_id] = queue.enqueue_many([exqueue.Call("elsewhere.task", (1,))], allow_unknown=True)
    assert queue.drain() == 0
    job = queue.get(job_id)
    assert job is not None and job.state == "waiting"
    stats = queue.stats()
    assert stats["elsewhere.task"].waiting == 1
    assert stats["elsewhere.task"].registered is False
    assert stats["known"].registered is True


def test_corrupt_payload_kills_that_job_and_others_keep_running(
    queue: exqueue.Queue, storage: exqueue.Storage, clock: FakeClock
) -> None:
    reports: list[str] = []
    queue.on_dead(lambda job, exc: reports.append(job.id))
    ran = []
    queue.worker(name="w")(lambda x: ran.append(x))
    queue.enqueue("w", 1)
    storage.enqueue([NewJob("corrupt", "w", b"\x00not json{", clock(), clock(), max_attempts=6)])
    queue.enqueue("w", 2)
    assert queue.drain() == 3
    assert sorted(ran) == [1, 2]
    job = queue.get("corrupt")
    assert job is not None and job.state == "dead" and job.attempt == 1
    assert job.last_error is not None and "payload could not be decoded" in job.last_error
    assert job.payload_error is not None
    assert reports == ["corrupt"]


def test_current_job_describes_the_running_job(queue: exqueue.Queue) -> None:
    seen = []

    @queue.worker(name="introspect")
    def introspect() -> None:
        seen.append(exqueue.current_job())

    job_id = introspect.enqueue()
    queue.drain()
    assert seen == [exqueue.JobContext(job_id, "introspect", 1, 6)]
    assert exqueue.current_job() is None


def test_scheduled_jobs_wait_for_their_time(queue: exqueue.Queue, clock: FakeClock) -> None:
    import datetime as dt

    ran = []
    w = queue.worker(name="later")(lambda tag: ran.append(tag))
    w.enqueue_in(60, "in")
    w.enqueue_at(dt.datetime.fromtimestamp(clock() + 120, tz=dt.UTC), "at")
    assert queue.drain() == 0
    assert queue.stats()["later"].scheduled == 2
    clock.advance(60)
    assert queue.drain() == 1 and ran == ["in"]
    clock.advance(60)
    assert queue.drain() == 1 and ran == ["in", "at"]


def test_queue_refuses_a_transaction_on_a_backend_without_the_capability() -> None:
    from exqueue_memory import MemoryStorage

    queue = exqueue.Queue(MemoryStorage())
    queue.worker(name="w")(lambda: None)
    with pytest.raises(exqueue.ConfigurationError, match="does not support transactional enqueue"):
        queue.enqueue_many([exqueue.Call("w")], transaction=object())
    assert queue.jobs() == []
