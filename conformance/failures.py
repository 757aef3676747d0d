"""Area: failure paths. Retry, bury and release, and the error history they keep.

Rules (:meth:`Storage.schedule_retry`, :meth:`Storage.bury`,
:meth:`Storage.release`): a retry sends the held job back to waiting at the
``run_at`` given and appends the error; a bury makes it dead and appends the
error; ``errors`` keeps every error, oldest first, each exactly as given (equal
consecutive errors, newlines, any length, any Unicode); a release gives the
job back with ``attempt - 1``, its ``run_at`` and errors untouched.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import settings as Settings
from hypothesis import strategies as st

from conformance.base import (
    NOW,
    Check,
    StorageFactory,
    claim,
    expect,
    got,
    job,
    limited,
    opened,
    run_to,
    unique,
)
from exqueue.storage import DEAD, WAITING, Storage

AREA = "failure paths"

#: Error texts real jobs produce: repeats, tracebacks, long messages, any script.
EDGE_ERRORS = (
    "ConnectionError: timed out",
    "ConnectionError: timed out",
    'Traceback (most recent call last):\n  File "app.py", line 1\nValueError: bad\n',
    "x" * 300,
    "ünïcødé ✗ 名前 🧾 — ошибка",
    "",
    "  padded  ",
    "tab\there, quote ' \" and backslash \\ ; -- and %s %% {} :",
    "ConnectionError: timed out",
)


def _history(storage: Storage, errors: tuple[str, ...], worker: str) -> tuple[str, ...]:
    """Fail a job once per error (the last one buries it); the errors it keeps."""
    job_id = unique("err")
    storage.enqueue([job(job_id, worker, max_attempts=len(errors) + 1)])
    for n, error in enumerate(errors):
        token = run_to(storage, job_id, worker)
        if n == len(errors) - 1:
            storage.bury(job_id, token, error=error)
        else:
            storage.schedule_retry(job_id, token, run_at=NOW, error=error)
    record = got(storage, job_id)
    storage.delete(job_id)
    return tuple(record.errors)


def check_error_history(factory: StorageFactory, settings: Settings) -> None:
    """errors keeps every error, oldest first, each exactly as given."""
    rule = (
        "schedule_retry and bury append their error to errors (oldest first), keeping "
        "every one exactly: repeats, newlines, long and non-ASCII texts"
    )
    with opened(factory) as (_, storage):
        worker = unique("errors")
        kept = _history(storage, EDGE_ERRORS, worker)
        expect(kept == EDGE_ERRORS, rule, f"kept {kept!r}")
        long = ("é" * 5000 + "\n") * 4
        kept = _history(storage, ("boom", long, "boom"), worker)
        expect(kept == ("boom", long, "boom"), rule, "a 20,004-character error changed")

        texts = st.text(st.characters(codec="utf-8"), max_size=300)

        @limited(settings, 8)
        @given(errors=st.lists(st.sampled_from(EDGE_ERRORS) | texts, min_size=1, max_size=5))
        @example(errors=["same", "same", "same"])
        def any_history(errors: list[str]) -> None:
            kept = _history(storage, tuple(errors), worker)
            expect(kept == tuple(errors), rule, f"gave {errors!r}, kept {kept!r}")

        any_history()


def check_retry_and_bury(factory: StorageFactory, settings: Settings) -> None:
    """A retry waits until its run_at and keeps the attempt; a bury makes the job dead."""
    with opened(factory) as (_, storage):
        worker = unique("retry")
        storage.enqueue([job("r-1", worker, max_attempts=3)])
        token = run_to(storage, "r-1", worker)
        at = NOW + 30.000001
        expect(
            storage.schedule_retry("r-1", token, run_at=at, error="e1") is True,
            "schedule_retry by the holder returns True",
        )
        record = got(storage, "r-1")
        rule = "schedule_retry: running -> waiting at exactly the run_at given, attempt kept"
        seen = (record.state, record.run_at, record.attempt, record.lease_token)
        expect(seen == (WAITING, at, 1, None), rule, seen)
        expect(claim(storage, worker, 1, now=at - 0.5) == [], rule, "claimable before its run_at")
        token = run_to(storage, "r-1", worker, now=at)
        expect(storage.bury("r-1", token, error="e2") is True, "bury by the holder returns True")
        record = got(storage, "r-1")
        after = (record.state, record.attempt, tuple(record.errors), record.lease_token)
        expect(
            after == (DEAD, 2, ("e1", "e2"), None), "bury: running -> dead, error appended", after
        )


def check_release(factory: StorageFactory, settings: Settings) -> None:
    """A release gives the job back: attempt - 1, run_at and errors untouched, lease cleared."""
    with opened(factory) as (_, storage):
        worker = unique("release")
        storage.enqueue([job("rel-1", worker, run_at=NOW - 5.5, max_attempts=4)])
        token = run_to(storage, "rel-1", worker)
        storage.schedule_retry("rel-1", token, run_at=NOW + 1.25, error="first ✗\nline two")
        token = run_to(storage, "rel-1", worker, now=NOW + 2)
        expect(storage.release("rel-1", token) is True, "release by the holder returns True")
        record = got(storage, "rel-1")
        rule = (
            "release: running -> waiting, attempt - 1, run_at and errors left as they were, "
            "lease cleared"
        )
        seen = (record.state, record.attempt, record.run_at, tuple(record.errors))
        expect(seen == (WAITING, 1, NOW + 1.25, ("first ✗\nline two",)), rule, seen)
        expect(record.lease_owner is None and record.lease_token is None, rule, record)
        expect(record.lease_expires is None, rule, record)
        again = claim(storage, worker, 1, now=NOW + 2)
        expect(
            [r.attempt for r in again] == [2],
            "a released job is runnable again and its next claim is attempt + 1",
            again,
        )


CHECKS = [
    Check("error_history", None, check_error_history, AREA),
    Check("retry_and_bury", None, check_retry_and_bury, AREA),
    Check("release", None, check_release, AREA),
]
