"""The cancellation and snooze area must catch broken backends: a test of the checks.

Each backend here is the memory backend with one realistic violation of a cancel
or snooze rule; the check named for it must fail, and the memory backend itself
must pass every check of the area. The state machine with cancel and snooze
(``control_machine``) must find the bugs named in :data:`MACHINE_FINDS` on its
own, derandomized as the first machine's power test is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from conformance import run_suite
from conformance.control import CHECKS
from conformance.profiles import get_settings
from exqueue.storage import (
    ASYNC_ENQUEUE,
    RUNNING,
    WAITING,
    CancelRequest,
    CancelResult,
    NewJob,
    SnoozeRequest,
    SnoozeResult,
)
from exqueue_memory import MemoryStorage
from tests.conformance.test_conformance_power import POWER

NAMES = [check.name for check in CHECKS]
SETTINGS = get_settings("ci")


class CancelDeletes(MemoryStorage):
    """Drops a cancelled waiting job: it disappears without a trace."""

    def cancel(self, request: CancelRequest) -> CancelResult:
        job = self.get(request.job_id)
        if job is not None and job.state == WAITING:
            self.delete(request.job_id)
            return "cancelled"
        return super().cancel(request)


class CancelKillsRunning(MemoryStorage):
    """Buries a running job at once, behind its holder's back."""

    def cancel(self, request: CancelRequest) -> CancelResult:
        job = self.get(request.job_id)
        if job is not None and job.state == RUNNING and job.lease_token is not None:
            self.bury(job.id, job.lease_token, error="cancelled")
            return "requested"
        return super().cancel(request)


class MarkOutlivesAttempt(MemoryStorage):
    """Marks the job, not the attempt: every later attempt is cancelled too."""

    def cancel_requested(self, token: str, job_ids: list[str]) -> list[str]:  # type: ignore[override]
        marked = {job_id for job_id, _ in self._marks()}
        out = []
        for job_id in job_ids:
            job = self.get(job_id)
            if job_id in marked and job is not None and job.lease_token == token:
                out.append(job_id)
        return out


class SnoozeSpendsAttempt(MemoryStorage):
    """Snoozes through a retry: the attempt is spent."""

    def snooze(self, request: SnoozeRequest) -> SnoozeResult:
        ok = self.schedule_retry(
            request.job_id, request.token, run_at=request.run_at, error="snoozed"
        )
        if ok:
            counts = self._snooze_counts()
            counts[request.job_id] = counts.get(request.job_id, 0) + 1
        return "snoozed" if ok else "lost"


class CancelDropsRunning(MemoryStorage):
    """Removes a running job when asked to cancel it: gone without trace, holder or not."""

    def cancel(self, request: CancelRequest) -> CancelResult:
        with self._lock:
            job = self._jobs.get(request.job_id)
            if job is not None and job.state == RUNNING:
                self._remove(job)
                return "requested"
        return super().cancel(request)


class SnoozeKeepsAttemptSpent(MemoryStorage):
    """Snoozes correctly in every other way, but the attempt stays spent."""

    def snooze(self, request: SnoozeRequest) -> SnoozeResult:
        from exqueue_memory import _unleased

        with self._lock:
            job = self._jobs.get(request.job_id)
            if job is None or job.state != RUNNING or job.lease_token != request.token:
                return "lost"
            counts = self._snooze_counts()
            if counts.get(job.id, 0) >= request.max_snoozes:
                return "capped"
            counts[job.id] = counts.get(job.id, 0) + 1
            self._marks().discard((job.id, request.token))
            self._store(_unleased(job, state=WAITING, run_at=request.run_at))
            self._notify()
            return "snoozed"


class SnoozeUnfenced(MemoryStorage):
    """Snoozes whatever running job it is told to, whatever the token."""

    def snooze(self, request: SnoozeRequest) -> SnoozeResult:
        job = self.get(request.job_id)
        if job is not None and job.state == RUNNING and job.lease_token is not None:
            request = replace(request, token=job.lease_token)
        return super().snooze(request)


class SnoozeUncapped(MemoryStorage):
    """Ignores max_snoozes: a job snoozes forever."""

    def snooze(self, request: SnoozeRequest) -> SnoozeResult:
        return super().snooze(replace(request, max_snoozes=10**9))


class AsyncMemory(MemoryStorage):
    """Memory with a (thread-free) aenqueue: the correct reference for the async check."""

    capabilities = MemoryStorage.capabilities | {ASYNC_ENQUEUE}

    async def aenqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        return self.enqueue(jobs)


class AsyncEnqueuePartial(AsyncMemory):
    """Stores a batch job by job: a duplicate id leaves the jobs before it stored."""

    async def aenqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        out = []
        for one in jobs:
            out += self.enqueue([one])
        return out


@pytest.mark.parametrize(
    ("broken", "caught_by"),
    [
        (CancelDeletes, "cancel_waiting"),
        (CancelKillsRunning, "cancel_running"),
        (CancelDropsRunning, "cancel_running"),
        (MarkOutlivesAttempt, "cancel_mark_per_attempt"),
        (SnoozeSpendsAttempt, "snooze"),
        (SnoozeKeepsAttemptSpent, "snooze"),
        (SnoozeUnfenced, "snooze"),
        (SnoozeUncapped, "snooze_cap"),
        (AsyncEnqueuePartial, "async_enqueue"),
    ],
)
def test_broken_control_is_caught(broken: type[MemoryStorage], caught_by: str) -> None:
    failures = run_suite(broken, SETTINGS, only=NAMES)
    assert caught_by in failures, f"{broken.__name__} passed {caught_by}: {sorted(failures)}"
    assert str(failures[caught_by]).startswith("rule broken: ")


#: What the state machine with cancel and snooze must find by itself. Two bugs it
#: does not reach reliably are left to their targeted checks: SnoozeUncapped needs one
#: job snoozed past the cap (``snooze_cap``), and MarkOutlivesAttempt needs a cancel,
#: the end of that attempt and a new claim of the same job before the invariant can see
#: it: the derandomized search found it at 50 examples and missed it at 200, and missed
#: it once in a CI run (``cancel_mark_per_attempt`` catches it every time).
MACHINE_FINDS = [CancelDropsRunning, SnoozeKeepsAttemptSpent]


@pytest.mark.parametrize("broken", MACHINE_FINDS, ids=lambda cls: cls.__name__)
def test_control_machine_alone_finds_the_bug(broken: type[MemoryStorage]) -> None:
    failures = run_suite(broken, POWER, only=["control_machine"])
    assert "control_machine" in failures, f"the control machine missed: {broken.__name__}"
    assert str(failures["control_machine"]).startswith("rule broken: ")


@pytest.mark.parametrize("backend", [MemoryStorage, AsyncMemory])
def test_memory_backend_passes(backend: type[MemoryStorage]) -> None:
    assert run_suite(backend, SETTINGS, only=NAMES) == {}
