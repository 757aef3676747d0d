"""Bounded error history: the targeted check, and the state machine's way to reach it.

A job keeps its first error and the last ``ERRORS_KEPT`` with the count of all
of them (see :mod:`exqueue.storage`). Random steps seldom fail one job more than
``ERRORS_KEPT + 1`` times, so the check fails jobs on purpose, with explicit
counts around the bound, and :func:`fail_often` gives the state machine a rule
that does the same against the model.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from hypothesis import settings as Settings

from conformance.model import Model
from exqueue.storage import DEAD, ERROR_TEXT_LIMIT, ERRORS_KEPT, NewJob, Storage

if TYPE_CHECKING:
    from collections.abc import Callable

    from conformance.machine import StorageMachine

NOW = 1_700_000_000.0
#: The worker type the state machine's repeated failures use (no other rule aims at it).
FLAKY = "app.flaky"


def fail_often(machine: StorageMachine, times: int) -> None:
    """Enqueue one job of :data:`FLAKY`, then claim and fail that type ``times`` times.

    Every claim and failure goes to the backend and the model alike and is
    compared by the machine as usual; the last failure buries the job.
    """
    machine._enqueue([machine._new_job(FLAKY, 0.0, times + 1, b"flaky")])
    for n in range(1, times + 1):
        token = machine._next("token")
        now, until = machine.now, machine.now + 30.0
        expected = machine.model.claim(
            FLAKY, 1, now=now, owner="node-1", token=token, lease_until=until, serial=False
        )
        got = machine.storage.claim(
            FLAKY, 1, now=now, owner="node-1", token=token, lease_until=until
        )
        assert [r.id for r in got] == expected, f"claim of {FLAKY!r}: {got}, expected {expected}"
        for record in got:
            machine._check(record)
            machine.issued.append((record.id, token))
            outcome = "fail into dead" if n == times else "fail and retry"
            machine._report(outcome, record.id, token, 0.0)


def _expected_errors(errors: list[str]) -> tuple[str, ...]:
    """The rule written out plainly: every error up to the bound, else first + last N."""
    if len(errors) <= ERRORS_KEPT + 1:
        return tuple(errors)
    return (errors[0], *errors[-ERRORS_KEPT:])


def _failed(storage: Storage, times: int, last: str) -> None:
    """A fresh job failed ``times`` times: retries and lost leases, then ``last``."""
    worker = f"app.errors-{uuid.uuid4().hex[:12]}"
    job_id = f"job-{uuid.uuid4().hex[:12]}"
    storage.enqueue([NewJob(job_id, worker, b"", NOW, NOW, times + 1)])
    model = Model()
    model.enqueue([NewJob(job_id, worker, b"", NOW, NOW, times + 1)])
    errors: list[str] = []
    for n in range(1, times + 1):
        now = NOW + 10.0 * n
        token = f"token-{n}"
        claimed = storage.claim(worker, 1, now=now, owner="o", token=token, lease_until=now + 5)
        got = [r.id for r in claimed]
        assert got == [job_id], f"failure {n} of {times}: claim returned {got}"
        model.claim(worker, 1, now=now, owner="o", token=token, lease_until=now + 5, serial=False)
        error = f"error {n} ✗ of {times}"
        errors.append(error)
        kind = last if n == times else ("recover" if n % 4 == 0 else "retry")
        if kind == "recover":
            storage.recover(now + 5.0, error=error)
            model.recover(now + 5.0, owner=None, error=error)
        elif kind == "bury":
            assert storage.bury(job_id, token, error=error), "bury of a held job refused"
            model.bury(job_id, token, error=error)
        else:
            assert storage.schedule_retry(job_id, token, run_at=now, error=error), (
                "schedule_retry of a held job refused"
            )
            model.schedule_retry(job_id, token, run_at=now, error=error)
        record = storage.get(job_id)
        assert record is not None, f"job gone after failure {n}"
        want = _expected_errors(errors)
        assert tuple(record.errors) == want == tuple(model.jobs[job_id].errors), (
            f"after {n} failures ({kind} last) a job keeps the first error and the last "
            f"{ERRORS_KEPT}: got {list(record.errors)}, expected {list(want)}"
        )
        assert record.error_count == n == model.jobs[job_id].error_count, (
            f"after {n} failures error_count is {record.error_count}, expected {n}"
        )
    listed = storage.list_jobs(worker=worker)
    assert [(tuple(r.errors), r.error_count) for r in listed] == [(want, times)], (
        "list_jobs shows other errors or another count than get"
    )
    if last == "bury":
        assert record is not None and record.state == DEAD
        assert storage.requeue(job_id, job_id + "-again", now=NOW) == "requeued"
        again = storage.get(job_id + "-again")
        assert again is not None and (tuple(again.errors), again.error_count) == ((), 0), (
            "requeue must clear the errors and error_count"
        )
        storage.delete(job_id + "-again")
    else:
        storage.delete(job_id)


def _clipped(storage: Storage) -> None:
    """One error text longer than ERROR_TEXT_LIMIT bytes keeps its head and tail."""
    worker = f"app.errors-{uuid.uuid4().hex[:12]}"
    job_id = f"job-{uuid.uuid4().hex[:12]}"
    storage.enqueue([NewJob(job_id, worker, b"", NOW, NOW, 3)])
    head, tail = "Traceback (most recent call last):\n", "\nValueError: the end ✗"
    exact = "x" * (ERROR_TEXT_LIMIT - 1) + "y"
    huge = head + "ü✗ frame\n" * (ERROR_TEXT_LIMIT // 5) + tail
    for n, error in enumerate((exact, huge)):
        token = f"token-{n}"
        storage.claim(worker, 1, now=NOW, owner="node", token=token, lease_until=NOW + 5.0)
        assert storage.schedule_retry(job_id, token, run_at=NOW, error=error)
    record = storage.get(job_id)
    assert record is not None and len(record.errors) == 2
    assert record.errors[0] == exact, "an error of exactly ERROR_TEXT_LIMIT bytes is kept whole"
    stored = record.errors[1]
    assert len(stored.encode()) <= ERROR_TEXT_LIMIT, (
        f"an error text is stored as {len(stored.encode())} bytes, over {ERROR_TEXT_LIMIT}"
    )
    assert stored.startswith(head) and stored.endswith(tail), "a clipped error keeps both ends"
    storage.delete(job_id)


def check_error_history(factory: Callable[[], Storage], settings: Settings) -> None:
    """The first error and the last ERRORS_KEPT, with the count, around the bound."""
    storage = factory()
    try:
        for times in (1, ERRORS_KEPT + 1, ERRORS_KEPT + 2, 25, 30):
            for last in ("retry", "recover", "bury"):
                _failed(storage, times, last)
        _clipped(storage)
    finally:
        storage.close()
