"""Area: dead jobs and requeue, and deleting by hand.

Rules (:meth:`Storage.requeue`, :meth:`Storage.delete`, SPEC §2 "manual
retry" and "manual delete"): a requeue turns a dead job into a waiting one
under the new id, with attempt 0, errors cleared, ``run_at = now``, the same
``seq`` and the same payload (however large); the old id is gone. Requeue of
anything but a dead job answers ``"not_dead"`` or ``"missing"`` and changes
nothing. Delete removes a waiting or dead job; a running one is refused with
``"running"`` and kept as it was; an unknown id is ``"missing"``.
"""

from __future__ import annotations

import os

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
from exqueue.storage import WAITING, Storage

AREA = "dead jobs and requeue"


def _dead(storage: Storage, job_id: str, worker: str, payload: bytes = b"") -> None:
    storage.enqueue([job(job_id, worker, payload, run_at=NOW - 100.25, max_attempts=2)])
    token = run_to(storage, job_id, worker)
    storage.schedule_retry(job_id, token, run_at=NOW - 50.5, error="first")
    token = run_to(storage, job_id, worker)
    storage.bury(job_id, token, error="second ✗")


def check_requeue(factory: StorageFactory, settings: Settings) -> None:
    """Requeue: dead -> waiting under the new id, attempt 0, no errors, run_at = now, same seq."""
    payload = os.urandom(200_000)  # over 64 KiB: a BLOB column would cut it
    with opened(factory) as (_, storage):
        worker = unique("requeue")
        _dead(storage, "rq-old", worker, payload)
        before = got(storage, "rq-old")
        when = NOW + 3600.75
        answer = storage.requeue("rq-old", "rq-new", now=when)
        expect(answer == "requeued", "requeue of a dead job answers 'requeued'", answer)
        rule = (
            "requeue makes the dead job waiting under the new id with attempt 0, errors "
            "cleared, run_at = now, and the same seq, worker, payload and max_attempts"
        )
        record = got(storage, "rq-new")
        seen = (record.state, record.attempt, tuple(record.errors), record.run_at, record.seq)
        expect(seen == (WAITING, 0, (), when, before.seq), rule, seen)
        same = (record.worker, record.max_attempts, record.enqueued_at)
        expect(same == (before.worker, before.max_attempts, before.enqueued_at), rule, same)
        expect(record.payload == payload, rule, "the 200 KB payload changed")
        expect(storage.get("rq-old") is None, "after a requeue the old id is gone", "get found it")
        listed = ids(storage.list_jobs(worker=worker))
        expect(listed == ["rq-new"], "after a requeue only the new id is listed", listed)
        expect(claim(storage, worker, 1, now=when - 1) == [], rule, "runnable before now")
        taken = claim(storage, worker, 1, now=when)
        expect([r.payload == payload for r in taken] == [True], rule, "claim changed the payload")
        answers = {
            "a running job": storage.requeue("rq-new", unique("x"), now=when),
            "a missing job": storage.requeue("rq-old", unique("x"), now=when),
        }
        expect(
            answers == {"a running job": "not_dead", "a missing job": "missing"},
            "requeue answers 'not_dead' for a live job and 'missing' for an unknown id",
            answers,
        )
        storage.enqueue([job("rq-waiting", worker)])
        answer = storage.requeue("rq-waiting", unique("x"), now=when)
        expect(answer == "not_dead", "requeue of a waiting job answers 'not_dead'", answer)
        expect(got(storage, "rq-waiting").state == WAITING, "a refused requeue changes nothing")


def check_delete(factory: StorageFactory, settings: Settings) -> None:
    """Delete removes waiting and dead jobs; a running job is refused with 'running' and kept."""
    with opened(factory) as (_, storage):
        worker = unique("delete")
        _dead(storage, "del-dead", worker)
        storage.enqueue([job("del-running", worker), job("del-waiting", worker, run_at=NOW + 60)])
        run_to(storage, "del-running", worker)
        running = got(storage, "del-running")
        answers = {job_id: storage.delete(job_id) for job_id in ("del-running", "del-nope")}
        rule = "delete refuses a running job with 'running' and answers 'missing' for unknown ids"
        expect(answers == {"del-running": "running", "del-nope": "missing"}, rule, answers)
        expect(storage.get("del-running") == running, "a refused delete changes nothing")
        rule = "delete removes a waiting or a dead job and answers 'deleted'"
        for job_id in ("del-dead", "del-waiting"):
            answer = storage.delete(job_id)
            expect(answer == "deleted", rule, f"{job_id}: {answer!r}")
            expect(storage.get(job_id) is None, rule, f"{job_id} is still there")
            again = storage.delete(job_id)
            expect(again == "missing", "a second delete answers 'missing'", again)
        left = ids(storage.list_jobs(worker=worker))
        expect(left == ["del-running"], "delete removes exactly the job named", left)


CHECKS = [
    Check("requeue", None, check_requeue, AREA),
    Check("delete", None, check_delete, AREA),
]
