"""Unique jobs through the public API, end to end on the memory and SQLite backends.

The key is explicit or derived from chosen arguments (bound through the
signature, so spellings agree); a duplicate stores nothing and returns the
holder's id with ``.duplicate`` True; states and period decide who holds a key.
"""

from __future__ import annotations

from typing import Any

import pytest

import exqueue
from exqueue import Call, DuplicateJobId, JobId, JobOptions, Uniqueness
from exqueue.options import HASHED_KEY_PREFIX
from exqueue.storage import UNIQUE_KEY_LIMIT
from tests.support.clock import FakeClock


def register(queue: exqueue.Queue, ran: list[Any], **defaults: Any) -> Any:
    @queue.worker(name="u.sync", concurrency=1, max_retries=0, **defaults)
    def sync(user_id: int, lang: str = "en", *, force: bool = False) -> None:
        ran.append((user_id, lang, force))

    return sync


def test_positional_keyword_and_default_spellings_share_a_key(queue: exqueue.Queue) -> None:
    ran: list[Any] = []
    sync = register(queue, ran)
    first = sync.options(unique=True).enqueue(7)
    again = [
        sync.options(unique=True).enqueue(user_id=7),
        sync.options(unique=True).enqueue(7, "en"),
        sync.options(unique=True).enqueue(7, lang="en", force=False),
    ]
    other = sync.options(unique=True).enqueue(7, "sv")
    assert type(first) is JobId and first.duplicate is False
    assert all(isinstance(i, DuplicateJobId) and i.duplicate and i == first for i in again)
    assert other != first and not other.duplicate
    assert {job.id for job in queue.jobs()} == {first, other}
    assert queue.drain(timeout=30) == 2


def test_a_key_from_chosen_arguments_and_worker_type_defaults(queue: exqueue.Queue) -> None:
    ran: list[Any] = []
    sync = register(queue, ran, unique=Uniqueness(args=["user_id"]))
    first = sync.enqueue(1, "en")
    dup = sync.enqueue(1, "sv", force=True)
    assert dup == first and dup.duplicate
    job = queue.get(first)
    assert job is not None and job.unique_key == '{"user_id":1}'
    plain = sync.options(unique=False).enqueue(1)  # per enqueue: not unique
    assert not plain.duplicate and queue.get(plain).unique_key is None  # type: ignore[union-attr]
    explicit = sync.options(unique="nightly").enqueue(2)
    assert sync.options(unique="nightly").enqueue(3) == explicit


def test_keys_never_collide_across_worker_types(queue: exqueue.Queue) -> None:
    ran: list[Any] = []
    sync = register(queue, ran)

    @queue.worker(name="u.other")
    def other(user_id: int, lang: str = "en", *, force: bool = False) -> None: ...

    a = sync.options(unique=True).enqueue(1)
    b = other.options(unique=True).enqueue(1)
    assert a != b and not b.duplicate
    assert queue.get(a).unique_key == queue.get(b).unique_key  # type: ignore[union-attr]


def test_a_long_derived_key_is_hashed_to_fit(queue: exqueue.Queue) -> None:
    ran: list[Any] = []
    sync = register(queue, ran)
    first = sync.options(unique=True).enqueue(1, "x" * 1000)
    key = queue.get(first).unique_key  # type: ignore[union-attr]
    assert key is not None and key.startswith(HASHED_KEY_PREFIX)
    assert len(key.encode()) <= UNIQUE_KEY_LIMIT
    assert sync.options(unique=True).enqueue(1, lang="x" * 1000).duplicate
    assert not sync.options(unique=True).enqueue(1, "x" * 999 + "y").duplicate


def test_running_holds_the_key_by_default_and_waiting_only_lets_go(queue: exqueue.Queue) -> None:
    seen: list[bool] = []

    @queue.worker(name="u.self")
    def again(key: str, states: list[str], first: bool) -> None:
        if first:  # while this job runs, the same key is enqueued again
            unique = Uniqueness(key, states=states)
            seen.append(again.options(unique=unique).enqueue(key, states, False).duplicate)

    again.options(unique=Uniqueness("k")).enqueue("k", ["waiting", "running"], True)
    queue.drain(timeout=30)
    assert seen == [True]
    again.options(unique=Uniqueness("w", states=["waiting"])).enqueue("w", ["waiting"], True)
    assert queue.drain(timeout=30) == 2  # the second was stored and ran
    assert seen == [True, False]


def test_a_dead_job_holds_its_key_when_asked(queue: exqueue.Queue) -> None:
    @queue.worker(name="u.fail", max_retries=0)
    def fail() -> None:
        raise RuntimeError("boom")

    holding = Uniqueness("once", states=["waiting", "running", "dead"])
    dead_id = fail.options(unique=holding).enqueue()
    queue.drain(timeout=30)
    assert queue.get(dead_id).state == "dead"  # type: ignore[union-attr]
    assert fail.options(unique=holding).enqueue() == dead_id
    fresh = fail.options(unique="once").enqueue()  # default states: dead does not hold it
    assert not fresh.duplicate


def test_a_period_covers_jobs_completed_within_it(queue: exqueue.Queue, clock: FakeClock) -> None:
    ran: list[Any] = []
    sync = register(queue, ran)
    hourly = sync.options(unique=Uniqueness(args=["user_id"], period=3600))
    first = hourly.enqueue(5)
    assert queue.drain(timeout=30) == 1  # completed at clock.now (complete gets now=)
    clock.advance(3599)
    assert hourly.enqueue(5) == first and hourly.enqueue(5).duplicate
    clock.advance(2)
    later = hourly.enqueue(5)
    assert not later.duplicate and later != first
    assert ran == [(5, "en", False)]


def test_enqueue_many_returns_one_id_per_call_in_order(queue: exqueue.Queue) -> None:
    ran: list[Any] = []
    sync = register(queue, ran)
    held = sync.options(unique=True).enqueue(1)
    unique = sync.options(unique=True)
    ids = queue.enqueue_many(
        [
            unique.call(1),  # held by a stored job
            unique.call(2),
            sync.call(2),  # not unique
            unique.call(user_id=2),  # an earlier one of this batch holds it
            Call("u.sync", (3,), options=JobOptions(unique="three", priority=4)),
        ]
    )
    assert [i.duplicate for i in ids] == [True, False, False, True, False]
    assert ids[0] == held and ids[3] == ids[1]
    assert len({ids[1], ids[2], ids[4]}) == 3
    assert len(queue.jobs()) == 4
    assert queue.get(ids[4]).priority == 4  # type: ignore[union-attr]


def test_one_bad_call_in_a_batch_stores_nothing(queue: exqueue.Queue) -> None:
    ran: list[Any] = []
    sync = register(queue, ran)
    with pytest.raises(exqueue.ConfigurationError):
        queue.enqueue_many([sync.options(unique=True).call(1), sync.options(priority=1.5).call(2)])
    assert queue.jobs() == []
