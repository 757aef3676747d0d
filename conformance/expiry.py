"""Area: expiry. A job not started by its expires_at never runs, and dies saying so.

Rules (capability EXPIRY; :meth:`Storage.claim`, :meth:`Storage.expire`): a
waiting job with ``expires_at <= now`` is not runnable (``expires_at == now``
is expired), also as a serial head; ``expire(now, limit=)`` moves up to
``limit`` such waiting jobs to ``dead``, oldest ``seq`` first, recording the
error :data:`~exqueue.storage.EXPIRED` after the errors it had (``attempt``
left as it was), and returns their ids; running and dead jobs are not touched.
``requeue`` clears ``expires_at``.
"""

from __future__ import annotations

from hypothesis import settings as Settings

from conformance.base import (
    NOW,
    Check,
    StorageFactory,
    claim,
    expect,
    got,
    ids,
    job,
    opened,
    unique,
)
from exqueue.storage import DEAD, EXPIRED, EXPIRY, RUNNING, WAITING

AREA = "expiry"

NEVER_RULE = "a waiting job with expires_at <= now is never claimed (expires_at == now is expired)"
EXPIRE_RULE = (
    "expire(now) moves waiting jobs with expires_at <= now to dead with the error EXPIRED "
    "after their earlier errors, attempt unchanged, ids oldest seq first, at most limit"
)


def check_expired_never_claimed(factory: StorageFactory, settings: Settings) -> None:
    """EXPIRY: a job whose expires_at <= now is not claimed, also as a serial head."""
    with opened(factory) as (_, storage):
        worker, serial = unique("exp"), unique("exp-serial")
        storage.enqueue(
            [
                job("at-now", worker, run_at=NOW - 1.0, expires_at=NOW),
                job("past", worker, run_at=NOW - 10.0, expires_at=NOW - 1.0),
                job("due-after-expiry", worker, run_at=NOW + 2.0, expires_at=NOW + 1.0),
                job("just-alive", worker, expires_at=NOW + 0.000001),
                job("no-expiry", worker),
                job("head", serial, expires_at=NOW),
                job("second", serial),
            ]
        )
        taken = ids(claim(storage, worker, 10, now=NOW))
        expect(taken == ["just-alive", "no-expiry"], NEVER_RULE, f"at now took {taken}")
        taken = ids(claim(storage, worker, 10, now=NOW + 2.0))
        expect(taken == [], NEVER_RULE, f"due after its expiry: took {taken}")
        taken = ids(claim(storage, serial, 1, now=NOW, serial=True))
        expect(taken == [], NEVER_RULE + "; a serial head too", f"took {taken}")
        # A claim with an earlier clock (another node's) may still take one not yet expired.
        taken = ids(claim(storage, worker, 10, now=NOW - 0.5))
        expect(taken == ["at-now"], "a job is runnable while expires_at > now", f"took {taken}")
        for job_id in ("past", "due-after-expiry", "head", "second"):
            state = got(storage, job_id).state
            expect(state == WAITING, "claim leaves expired jobs waiting", f"{job_id}: {state}")


def check_expire(factory: StorageFactory, settings: Settings) -> None:
    """EXPIRY: expire(now) buries expired waiting jobs with EXPIRED, attempt kept, seq order."""
    with opened(factory) as (_, storage):
        worker = unique("expire")
        storage.enqueue(
            [
                job("failed-once", worker, expires_at=NOW + 1.0, max_attempts=3),
                job("running", worker, run_at=NOW - 1.0, expires_at=NOW + 1.0),
                job("e-late", worker, run_at=NOW + 50.0, expires_at=NOW + 2.0),
                job("e-boundary", worker, run_at=NOW + 50.0, expires_at=NOW + 3.0),
                job("alive", worker, run_at=NOW + 50.0, expires_at=NOW + 3.000001),
                job("forever", worker, run_at=NOW + 50.0),
            ]
        )
        token = unique("tok")
        taken = ids(claim(storage, worker, 1, now=NOW, token=token))
        expect(taken == ["running"], "claim takes the runnable job first in order", taken)
        token2 = unique("tok")
        expect(ids(claim(storage, worker, 1, now=NOW, token=token2)) == ["failed-once"], "claim")
        storage.schedule_retry("failed-once", token2, run_at=NOW + 0.5, error="first failure")
        expect(storage.expire(NOW + 0.5) == [], EXPIRE_RULE, "expired a job before its time")
        first = storage.expire(NOW + 3.0, limit=2)
        expect(first == ["failed-once", "e-late"], EXPIRE_RULE, f"limit 2 expired {first}")
        rest = storage.expire(NOW + 3.0, limit=2)
        expect(rest == ["e-boundary"], EXPIRE_RULE, f"then expired {rest}")
        expect(storage.expire(NOW + 3.0) == [], EXPIRE_RULE, "a third call expired again")
        record = got(storage, "failed-once")
        expect(
            record.state == DEAD
            and tuple(record.errors) == ("first failure", EXPIRED)
            and record.error_count == 2
            and record.attempt == 1
            and record.lease_token is None,
            EXPIRE_RULE,
            f"failed-once: state={record.state} errors={record.errors} "
            f"error_count={record.error_count} attempt={record.attempt}",
        )
        record = got(storage, "e-late")
        expect(
            tuple(record.errors) == (EXPIRED,) and record.attempt == 0,
            EXPIRE_RULE,
            f"e-late: errors={record.errors} attempt={record.attempt}",
        )
        expect(record.expires_at == NOW + 2.0, "an expired job keeps its expires_at", record)
        for job_id, state in (("running", RUNNING), ("alive", WAITING), ("forever", WAITING)):
            seen = got(storage, job_id).state
            expect(seen == state, "expire() touches only expired waiting jobs", f"{job_id}: {seen}")
        expect(storage.complete("running", token), "a running job past expires_at may finish")
        counts = storage.counts(NOW + 3.0).get(worker)
        expect(counts is not None and counts.dead == 3, "expired jobs count as dead", counts)
        # A person's retry runs it after all: expires_at is cleared.
        new_id = unique("again")
        expect(storage.requeue("e-late", new_id, now=NOW + 4.0) == "requeued", "requeue")
        again = got(storage, new_id)
        expect(again.expires_at is None, "requeue clears expires_at", again.expires_at)
        expect(ids(claim(storage, worker, 1, now=NOW + 4.0)) == [new_id], "requeued job runs")


CHECKS = [
    Check("expired_never_claimed", EXPIRY, check_expired_never_claimed, AREA),
    Check("expire", EXPIRY, check_expire, AREA),
]
