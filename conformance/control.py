"""Area: cancellation and snooze (capabilities ``CANCEL`` and ``SNOOZE``).

A cancel ends a waiting job at once (dead with ``CANCELLED``, or deleted) and
only marks a running one: the job stays running under its lease, its holder
finds the mark with ``cancel_requested`` (only under its own token) and records
the outcome, fenced. A mark belongs to one attempt. A snooze is a fenced
``running -> waiting`` at a later ``run_at`` that gives the attempt back and
counts, refused (``capped``, nothing changed) once the count reaches the cap.
``aenqueue`` (capability ``ASYNC_ENQUEUE``) is ``enqueue`` awaited.
"""

from __future__ import annotations

import asyncio

from hypothesis import settings as Settings

from conformance.base import (
    NOW,
    Check,
    StorageFactory,
    claim,
    expect,
    got,
    ids,
    implements,
    job,
    opened,
    run_to,
    unique,
)
from exqueue.storage import (
    ASYNC_ENQUEUE,
    CANCEL,
    CANCELLED,
    DEAD,
    RUNNING,
    SNOOZE,
    WAITING,
    CancelRequest,
    SnoozeRequest,
    SupportsAsyncEnqueue,
    SupportsCancel,
    SupportsSnooze,
)

AREA = "cancellation and snooze"
CANCEL_API = "a backend declaring 'cancel' implements cancel and cancel_requested"
SNOOZE_API = "a backend declaring 'snooze' implements snooze and snoozes"


def check_cancel_waiting(factory: StorageFactory, settings: Settings) -> None:
    """A waiting job cancelled is kept dead with the error "cancelled", never claimed."""
    with opened(factory) as (_, storage):
        store, worker = implements(storage, SupportsCancel, CANCEL_API), unique("cancel-wait")
        storage.enqueue([job("w1", worker), job("w2", worker, run_at=NOW + 3600)])
        for job_id in ("w1", "w2"):
            outcome = store.cancel(CancelRequest(job_id))
            expect(outcome == "cancelled", "cancel of a waiting job returns 'cancelled'", outcome)
            record = got(storage, job_id)
            expect(
                record.state == DEAD and record.errors == (CANCELLED,) and record.attempt == 0,
                "a cancelled waiting job is dead with the one error 'cancelled', attempt kept",
                record,
            )
        taken = claim(storage, worker, 5, now=NOW + 7200)
        expect(taken == [], "a cancelled job is never claimed", ids(taken))
        again = store.cancel(CancelRequest("w1"))
        expect(again == "finished", "cancel of a dead job changes nothing: 'finished'", again)
        expect(got(storage, "w1").errors == (CANCELLED,), "a second cancel records nothing")
        missing = store.cancel(CancelRequest("nope"))
        expect(missing == "missing", "cancel of an unknown id returns 'missing'", missing)


def check_cancel_delete(factory: StorageFactory, settings: Settings) -> None:
    """``delete=True`` removes a waiting or dead job instead of keeping it."""
    with opened(factory) as (_, storage):
        store, worker = implements(storage, SupportsCancel, CANCEL_API), unique("cancel-del")
        storage.enqueue([job("d1", worker), job("d2", worker)])
        outcome = store.cancel(CancelRequest("d1", delete=True))
        expect(outcome == "deleted", "cancel(delete=True) of a waiting job: 'deleted'", outcome)
        expect(storage.get("d1") is None, "a job cancelled with delete is gone")
        store.cancel(CancelRequest("d2"))
        outcome = store.cancel(CancelRequest("d2", delete=True))
        expect(outcome == "deleted", "cancel(delete=True) of a dead job: 'deleted'", outcome)
        expect(storage.get("d2") is None, "a dead job cancelled with delete is gone")


def check_cancel_running(factory: StorageFactory, settings: Settings) -> None:
    """A running job is only marked; its holder sees the mark and records the outcome, fenced."""
    with opened(factory) as (_, storage):
        store, worker = implements(storage, SupportsCancel, CANCEL_API), unique("cancel-run")
        storage.enqueue([job("r1", worker), job("r2", worker)])
        token = run_to(storage, "r1", worker)
        before = got(storage, "r1")
        outcome = store.cancel(CancelRequest("r1", delete=True))
        expect(outcome == "requested", "cancel of a running job returns 'requested'", outcome)
        after = got(storage, "r1")
        expect(
            after.state == RUNNING
            and after.lease_token == token
            and after.lease_expires == before.lease_expires,
            "a running job stays running under its lease when cancelled",
            after,
        )
        marked = store.cancel_requested(token, ["r1", "r2", "nope"])
        expect(marked == ["r1"], "cancel_requested names the marked job held with token", marked)
        other = store.cancel_requested(unique("tok"), ["r1"])
        expect(other == [], "cancel_requested with another token names nothing", other)
        expect(not storage.bury("r1", unique("tok"), error=CANCELLED), "a stale bury is fenced")
        expect(storage.bury("r1", token, error=CANCELLED), "the holder records the cancel")
        expect(got(storage, "r1").state == DEAD, "the holder's bury makes the job dead")


def check_cancel_mark_per_attempt(factory: StorageFactory, settings: Settings) -> None:
    """A mark dies with its attempt: a release, a retry or a recovery ends it."""
    with opened(factory) as (_, storage):
        store, worker = implements(storage, SupportsCancel, CANCEL_API), unique("cancel-att")
        storage.enqueue([job("m1", worker, max_attempts=5)])
        token = run_to(storage, "m1", worker)
        store.cancel(CancelRequest("m1"))
        expect(storage.release("m1", token), "release of a marked job applies")
        fresh = run_to(storage, "m1", worker)
        seen = store.cancel_requested(fresh, ["m1"])
        expect(seen == [], "a new attempt after a release is not marked", seen)
        store.cancel(CancelRequest("m1"))
        storage.schedule_retry("m1", fresh, run_at=NOW, error="boom")
        third = run_to(storage, "m1", worker)
        seen = store.cancel_requested(third, ["m1"])
        expect(seen == [], "a new attempt after a retry is not marked", seen)


def check_snooze(factory: StorageFactory, settings: Settings) -> None:
    """A snooze puts the held job back at run_at, attempt given back, fenced."""
    with opened(factory) as (_, storage):
        store, worker = implements(storage, SupportsSnooze, SNOOZE_API), unique("snooze")
        storage.enqueue([job("s1", worker)])
        token = run_to(storage, "s1", worker)
        stale = store.snooze(SnoozeRequest("s1", unique("tok"), NOW + 60, 5))
        expect(stale == "lost", "a snooze with another token is fenced: 'lost'", stale)
        expect(got(storage, "s1").state == RUNNING, "a fenced snooze changes nothing")
        outcome = store.snooze(SnoozeRequest("s1", token, NOW + 60, 5))
        expect(outcome == "snoozed", "a snooze of a held job returns 'snoozed'", outcome)
        record = got(storage, "s1")
        expect(
            record.state == WAITING
            and record.attempt == 0
            and record.run_at == NOW + 60
            and record.lease_token is None,
            "a snoozed job waits at run_at with its attempt given back and no lease",
            record,
        )
        expect(store.snoozes("s1") == 1, "the snooze is counted", store.snoozes("s1"))
        expect(claim(storage, worker, now=NOW + 30) == [], "a snoozed job waits for run_at")
        again = store.snooze(SnoozeRequest("s1", token, NOW + 60, 5))
        expect(again == "lost", "the old token cannot snooze again", again)
        token = run_to(storage, "s1", worker, now=NOW + 60)
        expect(got(storage, "s1").attempt == 1, "the snoozed job's next run is attempt 1")
        storage.schedule_retry("s1", token, run_at=NOW + 60, error="boom")
        expect(store.snoozes("s1") == 1, "the count survives a retry", store.snoozes("s1"))
        token = run_to(storage, "s1", worker, now=NOW + 60)
        storage.bury("s1", token, error="boom")
        expect(storage.requeue("s1", "s1-again", now=NOW + 60) == "requeued", "requeue applies")
        expect(store.snoozes("s1-again") == 0, "a requeued job starts with no snoozes")


def check_snooze_cap(factory: StorageFactory, settings: Settings) -> None:
    """Once snoozed ``max_snoozes`` times, a snooze is refused and changes nothing."""
    with opened(factory) as (_, storage):
        store, worker = implements(storage, SupportsSnooze, SNOOZE_API), unique("snooze-cap")
        storage.enqueue([job("c1", worker)])
        for _ in range(2):
            token = run_to(storage, "c1", worker)
            outcome = store.snooze(SnoozeRequest("c1", token, NOW, 2))
            expect(outcome == "snoozed", "snoozes under the cap apply", outcome)
        token = run_to(storage, "c1", worker)
        outcome = store.snooze(SnoozeRequest("c1", token, NOW, 2))
        expect(outcome == "capped", "a snooze past max_snoozes returns 'capped'", outcome)
        record = got(storage, "c1")
        expect(
            record.state == RUNNING and record.lease_token == token and record.attempt == 1,
            "a capped snooze leaves the job running under its lease",
            record,
        )
        expect(store.snoozes("c1") == 2, "a capped snooze is not counted", store.snoozes("c1"))


def check_async_enqueue(factory: StorageFactory, settings: Settings) -> None:
    """``aenqueue`` is ``enqueue`` awaited: same ids, same records, same duplicate refusal."""
    with opened(factory) as (_, storage):
        store = implements(
            storage, SupportsAsyncEnqueue, "a backend declaring 'async_enqueue' implements aenqueue"
        )
        worker = unique("aenqueue")

        async def twice() -> tuple[list[str], str]:
            got = await store.aenqueue([job("a1", worker), job("a2", worker, priority=0)])
            try:
                await store.aenqueue([job("a3", worker), job("a1", worker)])
            except ValueError:
                return got, "refused"
            return got, "stored"

        got, dup = asyncio.run(twice())
        expect(got == ["a1", "a2"], "aenqueue returns each job's id in order", got)
        expect(dup == "refused", "aenqueue of a duplicate id raises ValueError", dup)
        expect(storage.get("a3") is None, "a refused aenqueue batch stores nothing")
        taken = claim(storage, worker, 5)
        expect(ids(taken) == ["a1", "a2"], "jobs from aenqueue are claimed like any", ids(taken))


CHECKS = [
    Check("cancel_waiting", CANCEL, check_cancel_waiting, AREA),
    Check("cancel_delete", CANCEL, check_cancel_delete, AREA),
    Check("cancel_running", CANCEL, check_cancel_running, AREA),
    Check("cancel_mark_per_attempt", CANCEL, check_cancel_mark_per_attempt, AREA),
    Check("snooze", SNOOZE, check_snooze, AREA),
    Check("snooze_cap", SNOOZE, check_snooze_cap, AREA),
    Check("async_enqueue", ASYNC_ENQUEUE, check_async_enqueue, AREA),
]
