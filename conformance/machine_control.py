"""The state machine's cancel and snooze variants, with the model's side of them.

Not rules of their own (see :mod:`conformance.machine_v2` for why): ``finish``
draws a snooze as one more outcome a holder reports (with a stale holder too,
which must be refused), and ``by_hand`` draws a cancel, with or without
``delete``, of a job of any kind. After each, every held job's mark is compared
with the model's (``cancel_requested``), so a mark that outlives its attempt,
or one lost by another transition, shows up. The model keeps its extra state on
the :class:`~conformance.model.Model` object under names of its own.
"""

from __future__ import annotations

from typing import Any

from conformance.model import Model, ModelJob
from exqueue.storage import (
    CANCEL,
    CANCELLED,
    DEAD,
    RUNNING,
    SNOOZE,
    WAITING,
    CancelRequest,
    SnoozeRequest,
    SupportsCancel,
    SupportsSnooze,
)

#: The cap the machine snoozes with: small, so it is reached.
MAX_SNOOZES = 2


def _snoozed(model: Model) -> dict[str, int]:
    counts: dict[str, int] = model.__dict__.setdefault("_control_snoozed", {})
    return counts


def _marks(model: Model) -> set[tuple[str, str]]:
    marks: set[tuple[str, str]] = model.__dict__.setdefault("_control_marks", set())
    return marks


def model_snooze(model: Model, job_id: str, token: str, run_at: float) -> str:
    job = model.held(job_id, token)
    if job is None:
        return "lost"
    counts = _snoozed(model)
    if counts.get(job_id, 0) >= MAX_SNOOZES:
        return "capped"
    counts[job_id] = counts.get(job_id, 0) + 1
    job.state = WAITING
    job.run_at = run_at
    job.attempt -= 1
    job.clear_lease()
    return "snoozed"


def model_cancel(model: Model, job_id: str, delete: bool) -> str:
    job: ModelJob | None = model.jobs.get(job_id)
    if job is None:
        return "missing"
    if job.state == RUNNING:
        assert job.lease_token is not None
        _marks(model).add((job_id, job.lease_token))
        return "requested"
    if delete:
        model.delete(job_id)
        return "deleted"
    if job.state == DEAD:
        return "finished"
    job.state = DEAD
    job.add_error(CANCELLED)
    return "cancelled"


def check_marks(machine: Any) -> None:
    """Every running job's mark, under its token, agrees with the model."""
    storage = machine.storage
    if CANCEL not in machine.capabilities or not isinstance(storage, SupportsCancel):
        return
    marks = _marks(machine.model)
    for job in machine.model.ordered():
        if job.state != RUNNING or job.lease_token is None:
            continue
        expected = [job.id] if (job.id, job.lease_token) in marks else []
        got = storage.cancel_requested(job.lease_token, [job.id])
        assert got == expected, (
            f"cancel_requested for {job.id!r} returned {got!r}, not {expected!r}"
        )


def report_snooze(machine: Any, job_id: str, token: str, delay: float) -> None:
    storage = machine.storage
    assert SNOOZE in machine.capabilities and isinstance(storage, SupportsSnooze)
    run_at = machine.now + abs(delay)
    expected = model_snooze(machine.model, job_id, token, run_at)
    got = storage.snooze(SnoozeRequest(job_id, token, run_at, MAX_SNOOZES))
    assert got == expected, f"snooze({job_id!r}, {token!r}) returned {got!r}, not {expected!r}"
    machine.touched.add(job_id)


def cancel_by_hand(machine: Any, job_id: str, delete: bool) -> None:
    storage = machine.storage
    assert CANCEL in machine.capabilities and isinstance(storage, SupportsCancel)
    expected = model_cancel(machine.model, job_id, delete)
    got = storage.cancel(CancelRequest(job_id, delete=delete))
    assert got == expected, (
        f"cancel({job_id!r}, delete={delete}) returned {got!r}, not {expected!r}"
    )
    machine.touched.add(job_id)
    check_marks(machine)
