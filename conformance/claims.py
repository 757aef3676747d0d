"""Area: claims and leases. Who may take a job, when, and who may touch it afterwards.

Rules (:meth:`Storage.claim`, :meth:`Storage.extend`, :meth:`Storage.recover`,
and "Fencing" in the ``exqueue.storage`` module docstring): a job is runnable
when ``run_at <= now``; a claim takes only waiting jobs, at most ``limit``,
with ``attempt += 1`` and the lease given; every holder operation needs the
current token; recovery takes back leases with ``lease_expires <= now`` (and,
with ``owner``, that exact owner's live ones), sends a job back to waiting at
``run_at = now`` while attempts are left and buries it on its last attempt,
always appending the given error and clearing the lease.
"""

from __future__ import annotations

from collections.abc import Callable

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
    run_to,
    unique,
)
from exqueue.storage import DEAD, RUNNING, WAITING, JobRecord, Storage

AREA = "claims and leases"


def check_claim_due_boundary(factory: StorageFactory, settings: Settings) -> None:
    """A job is runnable when run_at <= now: exactly at its run_at, not a moment before."""
    with opened(factory) as (_, storage):
        worker = unique("due")
        storage.enqueue([job("due-a", worker, run_at=NOW), job("due-b", worker, run_at=NOW + 0.5)])
        rule = "claim takes waiting jobs with run_at <= now, and no others"
        expect(claim(storage, worker, 5, now=NOW - 0.000001) == [], rule, "claimed 1 µs early")
        first = ids(claim(storage, worker, 5, now=NOW))
        expect(first == ["due-a"], rule, f"at now == run_at claimed {first}")
        expect(claim(storage, worker, 5, now=NOW + 0.25) == [], rule, "claimed 0.25 s early")
        second = ids(claim(storage, worker, 5, now=NOW + 0.5))
        expect(second == ["due-b"], rule, f"at now == run_at claimed {second}")


def check_claim_takes_waiting_only(factory: StorageFactory, settings: Settings) -> None:
    """A claim takes only waiting jobs, at most limit, with attempt + 1 and the given lease."""
    with opened(factory) as (_, storage):
        worker = unique("claim")
        storage.enqueue([job(f"c-{n}", worker) for n in range(6)])
        before = storage.list_jobs(worker=worker)
        expect(claim(storage, worker, 0) == [], "claim with limit 0 takes nothing")
        expect(storage.list_jobs(worker=worker) == before, "claim with limit 0 changes nothing")
        taken = claim(storage, worker, 2, owner="node_1:%", token="tok-2", lease_until=NOW + 7.25)
        expect(ids(taken) == ["c-0", "c-1"], "claim takes at most limit jobs", ids(taken))
        for record in taken + [got(storage, "c-0")]:
            seen = (record.state, record.attempt, record.lease_owner, record.lease_token)
            expect(
                seen == (RUNNING, 1, "node_1:%", "tok-2") and record.lease_expires == NOW + 7.25,
                "a claimed job is running, attempt + 1, with exactly the lease given",
                record,
            )
        rest = ids(claim(storage, worker, 10))
        expect(rest == ["c-2", "c-3", "c-4", "c-5"], "claim skips running jobs", rest)
        expect(claim(storage, worker, 10) == [], "running jobs are never claimed again")
        storage.enqueue([job("c-dead", worker)])
        token = run_to(storage, "c-dead", worker)
        storage.bury("c-dead", token, error="x")
        expect(claim(storage, worker, 10) == [], "dead jobs are never claimed")
        other = unique("other")
        storage.enqueue([job("c-other", other)])
        expect(claim(storage, worker, 10) == [], "a claim takes only its own worker's jobs")


def _holder_calls(storage: Storage, job_id: str, token: str) -> dict[str, Callable[[], object]]:
    return {
        "complete": lambda: storage.complete(job_id, token),
        "schedule_retry": lambda: storage.schedule_retry(job_id, token, run_at=NOW, error="z"),
        "bury": lambda: storage.bury(job_id, token, error="z"),
        "release": lambda: storage.release(job_id, token),
        "extend": lambda: storage.extend(token, [job_id], NOW + 99_999),
    }


def _refused(storage: Storage, job_id: str, token: str, why: str) -> None:
    rule = (
        "complete, schedule_retry, bury, release and extend apply only while the job "
        "is running with the caller's token; otherwise they change nothing"
    )
    for name, call in _holder_calls(storage, job_id, token).items():
        before = storage.get(job_id)
        answer = call()
        expect(answer in (False, []), rule, f"{name} by {why} answered {answer!r}")
        expect(storage.get(job_id) == before, rule, f"{name} by {why} changed the job")


def check_fencing(factory: StorageFactory, settings: Settings) -> None:
    """Only the current holder's token moves a running job; a lost lease stays lost."""
    with opened(factory) as (_, storage):
        worker = unique("fence")
        storage.enqueue([job("f-1", worker, max_attempts=5)])
        first = unique("tok")
        claim(storage, worker, 1, token=first, lease_until=NOW + 1)
        _refused(storage, "f-1", "token-never-issued", "a token never issued")
        storage.recover(NOW + 1, error="lost")
        _refused(storage, "f-1", first, "a holder whose lease was recovered (job waiting)")
        second = run_to(storage, "f-1", worker, now=NOW + 2)
        _refused(storage, "f-1", first, "a holder whose lease was recovered (job claimed anew)")
        extended = storage.extend(second, ["f-1"], NOW + 500)
        expect(extended == ["f-1"], "extend renews the holder's lease", extended)
        expect(got(storage, "f-1").lease_expires == NOW + 500, "extend sets lease_expires")
        expect(storage.complete("f-1", second), "the current holder completes its job")
        _refused(storage, "f-1", second, "a holder of a completed job")


def check_recover_boundary(factory: StorageFactory, settings: Settings) -> None:
    """Recovery takes leases with lease_expires <= now: exactly at expiry, not before."""
    with opened(factory) as (_, storage):
        worker = unique("expiry")
        storage.enqueue([job("x-1", worker), job("x-2", worker)])
        claim(storage, worker, 1, lease_until=NOW + 10)
        claim(storage, worker, 1, lease_until=NOW + 20)
        rule = "recover takes back exactly the running jobs with lease_expires <= now"
        early = storage.recover(NOW + 10 - 0.000001, error="lost")
        expect(early.waiting == () and early.dead == (), rule, f"1 µs early: {early}")
        due = storage.recover(NOW + 10, error="lost")
        expect(list(due.waiting) == ["x-1"] and due.dead == (), rule, f"at expiry: {due}")
        expect(got(storage, "x-2").state == RUNNING, rule, "a live lease was taken back")


def check_recover_by_owner(factory: StorageFactory, settings: Settings) -> None:
    """recover(owner=X) takes X's live leases and every expired one, no other live lease."""
    with opened(factory) as (_, storage):
        worker = unique("owner")
        owners = ["w_1", "wX1", "w%", "w%%", "w:1", "w", "W_1"]
        storage.enqueue([job(f"o-{n}", worker) for n in range(len(owners) + 1)])
        for owner in owners:
            claim(storage, worker, 1, owner=owner)  # live: an hour's lease
        claim(storage, worker, 1, owner="gone", lease_until=NOW)  # expired
        rule = (
            "recover(now, owner=X) takes back every lease of exactly owner X, expired or "
            "not, plus every expired lease; owner names are exact strings"
        )
        by_owner = {r.lease_owner: r.id for r in storage.list_jobs(state=RUNNING, worker=worker)}
        expect(len(by_owner) == len(owners) + 1, "each claim holds its own lease", by_owner)
        still = set(owners)
        for owner, extra in (("w_1", ["gone"]), ("w%", []), ("w:1", []), ("w", [])):
            back = storage.recover(NOW + 1, owner=owner, error="restarted")
            want = sorted(by_owner[o] for o in [owner, *extra])
            expect(sorted(back.waiting) == want, rule, f"owner={owner!r}: took {back}")
            still.discard(owner)
            live = {r.lease_owner or "" for r in storage.list_jobs(state=RUNNING, worker=worker)}
            expect(live == still, rule, f"after owner={owner!r} still held by {sorted(live)}")


def check_recover_last_attempt(factory: StorageFactory, settings: Settings) -> None:
    """Recovery: attempts left -> waiting at run_at = now; last attempt -> dead; error appended."""
    with opened(factory) as (_, storage):
        worker = unique("last")
        storage.enqueue(
            [
                job("last-1of1", worker, max_attempts=1),
                job("last-1of2", worker, max_attempts=2),
                job("last-2of3", worker, max_attempts=3),
                job("last-2of2", worker, max_attempts=2),
            ]
        )
        lease = NOW + 5
        claim(storage, worker, 2, lease_until=lease)
        for job_id in ("last-2of3", "last-2of2"):
            token = run_to(storage, job_id, worker)
            storage.schedule_retry(job_id, token, run_at=NOW, error="first ✗")
            claim(storage, worker, 1, lease_until=lease)
        when = NOW + 60.5
        error = "worker lost ✗ — node-7 went away\nat 12:00"
        back = storage.recover(when, error=error)
        rule = (
            "recover sends a job with attempt < max_attempts back to waiting with run_at = now, "
            "and a job on its last attempt to dead; it appends the given error and clears the lease"
        )
        expect(
            sorted(back.waiting) == ["last-1of2", "last-2of3"]
            and sorted(back.dead) == ["last-1of1", "last-2of2"],
            rule,
            back,
        )
        want: dict[str, tuple[object, ...]] = {
            "last-1of1": (DEAD, 1, (error,)),
            "last-1of2": (WAITING, 1, (error,)),
            "last-2of3": (WAITING, 2, ("first ✗", error)),
            "last-2of2": (DEAD, 2, ("first ✗", error)),
        }
        for job_id, (state, attempt, errors) in want.items():
            record = got(storage, job_id)
            seen = (record.state, record.attempt, tuple(record.errors))
            expect(seen == (state, attempt, errors), rule, f"{job_id}: {seen}")
            expect(_unleased(record), rule, f"{job_id} kept its lease: {record}")
            if state == WAITING:
                expect(record.run_at == when, rule, f"{job_id} has run_at {record.run_at!r}")


def _unleased(record: JobRecord) -> bool:
    return (record.lease_owner, record.lease_token, record.lease_expires) == (None, None, None)


CHECKS = [
    Check("claim_due_boundary", None, check_claim_due_boundary, AREA),
    Check("claim_takes_waiting_only", None, check_claim_takes_waiting_only, AREA),
    Check("fencing", None, check_fencing, AREA),
    Check("recover_boundary", None, check_recover_boundary, AREA),
    Check("recover_by_owner", None, check_recover_by_owner, AREA),
    Check("recover_last_attempt", None, check_recover_last_attempt, AREA),
]
