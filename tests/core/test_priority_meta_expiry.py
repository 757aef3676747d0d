"""Priority, meta, timeout and expiry through the public API, on memory and SQLite.

Priorities order claims (worker-type default, per-enqueue override); meta is
stored, merged over the worker type's, filtered by tag and seen by the running
job; a job not started by its expiry is never run, dies with the reason and is
reported to ``on_dead``, from ``drain`` and from a running worker.
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest

import exqueue
from exqueue import JobExpiredError, JobOptions
from exqueue.storage import EXPIRED
from tests.support.clock import FakeClock
from tests.support.procapp import wait_until


def test_lower_priority_runs_first(queue: exqueue.Queue) -> None:
    order: list[str] = []

    @queue.worker(name="p.step", concurrency=1, priority=5)
    def step(name: str) -> None:
        order.append(name)

    step.enqueue("default-5")
    step.options(priority=10).enqueue("low")
    step.options(priority=-1).enqueue("urgent")
    queue.enqueue_many([step.options(priority=0).call("zero"), step.call("default-5b")])
    assert queue.drain(timeout=30) == 5
    assert order == ["urgent", "zero", "default-5", "default-5b", "low"]


def test_serial_types_ignore_priority(queue: exqueue.Queue) -> None:
    order: list[int] = []

    @queue.worker(name="p.serial", serial=True)
    def in_line(n: int) -> None:
        order.append(n)

    for n, priority in enumerate([3, 1, 2]):
        in_line.options(priority=priority).enqueue(n)
    queue.drain(timeout=30)
    assert order == [0, 1, 2]


def test_meta_is_stored_merged_filtered_and_seen_by_the_job(queue: exqueue.Queue) -> None:
    seen: list[dict[str, str]] = []

    @queue.worker(name="p.meta", meta={"team": "billing", "tier": "a"})
    def tagged(n: int) -> None:
        job = exqueue.current_job()
        assert job is not None
        seen.append(dict(job.meta))

    first = tagged.options(meta={"tier": "b", "trace": "t-1"}).enqueue(1)
    second = tagged.enqueue(2)
    job = queue.get(first)
    assert job is not None
    assert job.meta == {"team": "billing", "tier": "b", "trace": "t-1"}
    assert job.to_dict()["meta"] == job.meta
    assert [j.id for j in queue.jobs(tag=("tier", "b"))] == [first]
    assert [j.id for j in queue.jobs(tag=("team", "billing"))] == [first, second]
    assert queue.jobs(tag=("team", "other")) == []
    with pytest.raises(ValueError, match="pair of strings"):
        queue.jobs(tag="team=billing")  # type: ignore[arg-type]
    queue.drain(timeout=30)
    assert sorted(seen, key=len) == [
        {"team": "billing", "tier": "a"},
        {"team": "billing", "tier": "b", "trace": "t-1"},
    ]


def test_timeout_and_expiry_are_stored_and_shown(queue: exqueue.Queue, clock: FakeClock) -> None:
    @queue.worker(name="p.shown", timeout=dt.timedelta(minutes=2))
    def shown() -> None: ...

    job_id = shown.options(expires_in=90).enqueue()
    job = queue.get(job_id)
    assert job is not None and job.timeout == 120.0
    assert job.expires_at == dt.datetime.fromtimestamp(clock.now + 90, tz=dt.UTC)
    fields = job.to_dict()
    assert fields["timeout"] == 120.0 and fields["expires_at"] == job.expires_at.isoformat()
    assert fields["priority"] == 0 and fields["unique_key"] is None


def test_an_expired_job_never_runs_and_is_reported_by_drain(
    queue: exqueue.Queue, clock: FakeClock
) -> None:
    ran: list[int] = []
    reported: list[tuple[str, str | None, BaseException | None]] = []

    @queue.worker(name="p.expiring", expires_in=60)
    def expiring(n: int) -> None:
        ran.append(n)

    @queue.on_dead
    def report(job: exqueue.Job, exc: BaseException | None) -> None:
        reported.append((job.id, job.last_error, exc))

    late = expiring.enqueue(1)
    kept = expiring.options(expires_in=3600).enqueue(2)
    at = dt.datetime.fromtimestamp(clock.now + 30, tz=dt.UTC)
    soon = queue.enqueue_many([expiring.options(expires_at=at).call(3)])[0]
    clock.advance(61)
    assert queue.drain(timeout=30) == 1
    assert ran == [2]
    assert sorted(r[0] for r in reported) == sorted([late, soon])
    for job_id, error, exc in reported:
        assert error == EXPIRED and isinstance(exc, JobExpiredError) and job_id in str(exc)
        job = queue.get(job_id)
        assert job is not None and (job.state, job.attempt) == ("dead", 0)
    assert queue.get(kept) is None  # it ran and succeeded


def test_a_running_worker_buries_jobs_that_expire_while_it_runs(clock: FakeClock) -> None:
    storage = exqueue.connect("memory://")
    queue = exqueue.Queue(storage, clock=clock, lease=0.3, poll_interval=0.05)
    reported: list[BaseException | None] = []
    gate = threading.Event()

    @queue.worker(name="p.blocker", concurrency=1)
    def blocker() -> None:
        gate.wait(30)

    queue.on_dead(lambda job, exc: reported.append(exc))
    blocker.enqueue()
    queued = blocker.options(expires_in=10).enqueue()  # waits behind the blocker
    queue.start()
    try:
        wait_until(
            lambda: queue.get(queued) is not None and queue.stats()["p.blocker"].running,
            "the blocker runs",
        )
        clock.advance(11)
        wait_until(lambda: reported, "the heartbeat buries the expired job")
        assert isinstance(reported[0], JobExpiredError)
        job = queue.get(queued)
        assert job is not None and job.state == "dead" and job.last_error == EXPIRED
    finally:
        gate.set()
        queue.stop(timeout=10)


def test_a_retried_dead_job_keeps_its_options_and_loses_its_expiry(
    queue: exqueue.Queue, clock: FakeClock
) -> None:
    @queue.worker(name="p.keep")
    def keep() -> None: ...

    job_id = keep.options(
        priority=3, meta={"a": "b"}, timeout=5, unique="k", expires_in=10
    ).enqueue()
    clock.advance(11)
    queue.drain(timeout=30)
    new_id = queue.retry(job_id)
    job = queue.get(new_id)
    assert job is not None
    assert (job.priority, job.meta, job.timeout, job.unique_key, job.expires_at) == (
        3,
        {"a": "b"},
        5.0,
        "k",
        None,
    )


def test_job_options_objects_merge_over_worker_defaults() -> None:
    defaults = JobOptions(priority=1, meta={"a": "1", "b": "1"}, expires_in=60, unique=True)
    merged = defaults.merged(JobOptions(meta={"b": "2"}, expires_at=2e9, unique=False))
    assert merged.priority == 1 and merged.meta == {"a": "1", "b": "2"}
    assert (merged.expires_in, merged.expires_at, merged.unique) == (None, 2e9, False)
    assert defaults.merged(None) is defaults


def test_options_go_through_a_transactional_enqueue(tmp_path: Path) -> None:
    from sqlalchemy.orm import Session

    from exqueue_sql import SQLStorage

    storage = SQLStorage(f"sqlite:///{tmp_path / 'jobs.db'}")
    queue = exqueue.Queue(storage)

    @queue.worker(name="p.ship", meta={"team": "ops"})
    def ship(order: int) -> None: ...

    with Session(storage.engine) as session:
        [job_id] = queue.enqueue_many(
            [ship.options(priority=4, meta={"order": "1"}, timeout=9).call(1)],
            transaction=session,
        )
        session.commit()
    job = queue.get(job_id)
    assert job is not None and not job_id.duplicate
    assert (job.priority, job.meta, job.timeout) == (4, {"team": "ops", "order": "1"}, 9.0)
    queue.close()
