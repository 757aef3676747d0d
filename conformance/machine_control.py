"""The state machine with cancel and snooze: a machine of its own, for CANCEL and SNOOZE.

:class:`ControlMachine` is :class:`conformance.machine.StorageMachine` with two
more rules: a holder (current or stale) snoozes its job, and a person cancels a
job of any kind, with or without ``delete``. It is a separate class, not more
variants of the first machine's rules: those shift the first machine's
derandomized search, which then stopped finding "claims ignore priority"
(``tests/conformance/test_conformance_power.py``).

The model's side (snooze counts by id, cancellation marks by ``(id, token)``)
lives here, beside :class:`~conformance.model.Model`. A mark belongs to one
attempt: the machine compares, after every step, each running job's mark under
its current token, so a mark lost by another transition or one that outlives
its attempt shows up; and every job's snooze count. A stale holder's snooze must
be refused (``lost``) and change nothing; a snooze past :data:`MAX_SNOOZES` is
``capped`` and changes nothing.
"""

from __future__ import annotations

from hypothesis import settings as Settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule, run_state_machine_as_test

from conformance.base import implements
from conformance.control import CANCEL_API, SNOOZE_API
from conformance.machine import StorageMachine, delays
from conformance.session import StorageFactory, StorageSession
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

#: The cap the machine snoozes with: one, so that a second snooze of a job meets it.
MAX_SNOOZES = 1
#: The control machine's share of the profile's examples: the first machine
#: already explores the other operations; this one adds their interleavings with
#: cancel and snooze, at a fraction of the time.
EXAMPLE_SHARE = 0.25


class ControlMachine(StorageMachine):
    """:class:`StorageMachine` plus snooze (a holder's outcome) and cancel (by hand)."""

    def __init__(self, session: StorageSession) -> None:
        super().__init__(session)
        #: Snoozes per job id (a requeued job has a new id, so starts at 0).
        self.snoozed: dict[str, int] = {}
        #: (id, token) of every cancellation asked of a running job.
        self.marks: set[tuple[str, str]] = set()

    # -- the model's side -------------------------------------------------------------

    def _model_snooze(self, job_id: str, token: str, run_at: float) -> str:
        job = self.model.held(job_id, token)
        if job is None:
            return "lost"
        if self.snoozed.get(job_id, 0) >= MAX_SNOOZES:
            return "capped"
        self.snoozed[job_id] = self.snoozed.get(job_id, 0) + 1
        job.state = WAITING
        job.run_at = run_at
        job.attempt -= 1
        job.clear_lease()
        return "snoozed"

    def _model_cancel(self, job_id: str, delete: bool) -> str:
        job = self.model.jobs.get(job_id)
        if job is None:
            return "missing"
        if job.state == RUNNING:
            assert job.lease_token is not None
            self.marks.add((job_id, job.lease_token))
            return "requested"
        if delete:
            self.model.delete(job_id)
            return "deleted"
        if job.state == DEAD:
            return "finished"
        job.state = DEAD
        job.add_error(CANCELLED)
        return "cancelled"

    # -- rules ------------------------------------------------------------------------

    @rule(data=st.data(), delay=delays)
    def snooze(self, data: st.DataObject, delay: float) -> None:
        """A holder snoozes its job (a stale holder first, when there is a current one)."""
        storage = self.storage
        if SNOOZE not in self.capabilities or not self.issued:
            return
        store = implements(storage, SupportsSnooze, SNOOZE_API)
        job_id, token = self._holder(data)
        tokens = [token]
        if self.model.held(job_id, token) is not None:
            old = [t for i, t in self.issued if i == job_id and t != token]
            tokens.insert(0, old[-1] if old else "token-never-issued")
        run_at = self.now + abs(delay)
        for holder in tokens:
            expected = self._model_snooze(job_id, holder, run_at)
            got = store.snooze(SnoozeRequest(job_id, holder, run_at, MAX_SNOOZES))
            assert got == expected, (
                f"snooze({job_id!r}, token={holder!r}, run_at={run_at}, "
                f"max_snoozes={MAX_SNOOZES}) returned {got!r}, expected {expected!r}"
            )
        self.touched.add(job_id)

    @rule(data=st.data(), delete=st.booleans())
    def cancel(self, data: st.DataObject, delete: bool) -> None:
        """A person cancels a job of any kind (waiting, running, dead, removed, never stored)."""
        storage = self.storage
        if CANCEL not in self.capabilities:
            return
        store = implements(storage, SupportsCancel, CANCEL_API)
        # Half the time a running job (if any): the mark, and what ends it, is the
        # subtle part; else a job of any kind.
        running = [job.id for job in self.model.ordered() if job.state == RUNNING]
        aim: bool = data.draw(st.booleans(), label="cancel a running job")
        if running and aim:
            job_id = data.draw(st.sampled_from(running), label="running job to cancel")
        else:
            job_id = self._pick_job(data, "job to cancel")
        expected = self._model_cancel(job_id, delete)
        got = store.cancel(CancelRequest(job_id, delete=delete))
        assert got == expected, (
            f"cancel({job_id!r}, delete={delete}) returned {got!r}, expected {expected!r}"
        )
        self.touched.add(job_id)

    # -- what only this machine observes ----------------------------------------------

    @invariant()
    def marks_and_snoozes(self) -> None:
        """Each running job is marked exactly when the model says, under its current token;
        each job's snooze count is the model's."""
        storage = self.storage
        if CANCEL in self.capabilities and isinstance(storage, SupportsCancel):
            for job in self.model.ordered():
                if job.state != RUNNING or job.lease_token is None:
                    continue
                expected = [job.id] if (job.id, job.lease_token) in self.marks else []
                got = storage.cancel_requested(job.lease_token, [job.id])
                assert got == expected, (
                    f"cancel_requested({job.lease_token!r}, [{job.id!r}]) returned {got!r}, "
                    f"expected {expected!r} (a mark belongs to the attempt it was asked of)"
                )
        if SNOOZE in self.capabilities and isinstance(storage, SupportsSnooze):
            for job in self.model.ordered():
                expected_count = self.snoozed.get(job.id, 0)
                count = storage.snoozes(job.id)
                assert count == expected_count, (
                    f"snoozes({job.id!r}) is {count}, expected {expected_count}"
                )


def control_settings(settings: Settings) -> Settings:
    """``settings`` with :data:`EXAMPLE_SHARE` of its examples (at least 3)."""
    examples = max(3, round(settings.max_examples * EXAMPLE_SHARE))
    return Settings(settings, max_examples=examples)


def run_control_machine(factory: StorageFactory, settings: Settings) -> None:
    """Run :class:`ControlMachine` against storages made by ``factory`` (raises on failure)."""
    session = StorageSession(factory)
    try:
        run_state_machine_as_test(
            lambda: ControlMachine(session),  # type: ignore[arg-type]
            settings=control_settings(settings),
        )
    finally:
        session.close()


__all__ = ["MAX_SNOOZES", "ControlMachine", "run_control_machine"]
