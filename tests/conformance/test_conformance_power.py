"""The conformance suite must fail on broken backends: a test of the tests.

Each backend below is MemoryStorage with one realistic bug, the kind a real
backend grows (an off-by-one on a time boundary, a token check forgotten in one
transition, a migration that resets a column). Every test asserts that the suite
reports the backend as broken; the last tests assert that correct backends pass,
so a suite that fails everything proves nothing.

The Hypothesis settings are derandomized (a fixed seed: the same examples on
every run) and skip shrinking, so a run is quick and deterministic.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings

from conformance import run_suite
from exqueue.storage import (
    DEAD,
    PERSISTENT,
    RUNNING,
    WAITING,
    WAKEUP,
    Counts,
    DeleteResult,
    JobRecord,
    JobState,
    NewJob,
    Recovered,
    RequeueResult,
    Storage,
)
from exqueue_memory import MemoryStorage

POWER = settings(
    max_examples=100,
    stateful_step_count=40,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)


# -- the base: every call passed to a MemoryStorage, through its public API only ------
#
# The bugs below are written against the Storage protocol, not MemoryStorage's
# internals (its indexes may change), so each wrapper keeps meaning exactly one bug.


class Wrapper:
    """A Storage that hands every call to ``inner``; subclasses bend one transition."""

    capabilities: frozenset[str] = frozenset({WAKEUP})

    def __init__(self, inner: MemoryStorage | None = None) -> None:
        self.inner = inner if inner is not None else MemoryStorage()

    def enqueue(self, jobs: Sequence[NewJob]) -> None:
        self.inner.enqueue(jobs)

    def claim(
        self,
        worker: str,
        limit: int,
        *,
        now: float,
        owner: str,
        token: str,
        lease_until: float,
        serial: bool = False,
    ) -> list[JobRecord]:
        return self.inner.claim(
            worker,
            limit,
            now=now,
            owner=owner,
            token=token,
            lease_until=lease_until,
            serial=serial,
        )

    def complete(self, job_id: str, token: str) -> bool:
        return self.inner.complete(job_id, token)

    def schedule_retry(self, job_id: str, token: str, *, run_at: float, error: str) -> bool:
        return self.inner.schedule_retry(job_id, token, run_at=run_at, error=error)

    def bury(self, job_id: str, token: str, *, error: str) -> bool:
        return self.inner.bury(job_id, token, error=error)

    def release(self, job_id: str, token: str) -> bool:
        return self.inner.release(job_id, token)

    def extend(self, token: str, job_ids: Sequence[str], lease_until: float) -> list[str]:
        return self.inner.extend(token, job_ids, lease_until)

    def recover(self, now: float, *, owner: str | None = None, error: str) -> Recovered:
        return self.inner.recover(now, owner=owner, error=error)

    def get(self, job_id: str) -> JobRecord | None:
        return self.inner.get(job_id)

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        worker: str | None = None,
        limit: int = 100,
        after_seq: int | None = None,
    ) -> list[JobRecord]:
        return self.inner.list_jobs(state=state, worker=worker, limit=limit, after_seq=after_seq)

    def delete(self, job_id: str) -> DeleteResult:
        return self.inner.delete(job_id)

    def requeue(self, job_id: str, new_id: str, *, now: float) -> RequeueResult:
        return self.inner.requeue(job_id, new_id, now=now)

    def counts(self, now: float) -> dict[str, Counts]:
        return self.inner.counts(now)

    def close(self) -> None:
        self.inner.close()

    def wait_for_jobs(self, timeout: float) -> bool:
        return self.inner.wait_for_jobs(timeout)

    def _all(self, **filters: object) -> list[JobRecord]:
        return self.inner.list_jobs(limit=1_000_000, **filters)  # type: ignore[arg-type]


class OnDisk(Wrapper):
    """Persistent: each open is a new object over the same MemoryStorage (the 'disk')."""

    capabilities = frozenset({PERSISTENT, WAKEUP})

    def __init__(self, disk: MemoryStorage, opened: list[int]) -> None:
        super().__init__(disk)
        opened[0] += 1
        if opened[0] > 1:
            self.on_reopen()

    def on_reopen(self) -> None:
        """What a restart does to the stored jobs (nothing, when correct)."""


def on_disk(cls: type[OnDisk]) -> Callable[[], Storage]:
    return functools.partial(cls, MemoryStorage(), [0])


# -- the broken backends -------------------------------------------------------------


class ClaimsEarly(Wrapper):
    """Allows a second of 'clock skew' at claim time: scheduled jobs start early."""

    def claim(self, worker: str, limit: int, *, now: float, **kwargs: Any) -> list[JobRecord]:
        return super().claim(worker, limit, now=now + 1.0, **kwargs)


class StealsRunning(Wrapper):
    """Treats running jobs as claimable, ignoring the holder's lease."""

    def claim(self, worker: str, limit: int, **kwargs: Any) -> list[JobRecord]:
        for job in self._all(state=RUNNING, worker=worker):
            self.inner.release(job.id, job.lease_token or "")
        return super().claim(worker, limit, **kwargs)


class AcceptsStaleToken(Wrapper):
    """complete() checks that the job is running, but not who holds it."""

    def complete(self, job_id: str, token: str) -> bool:
        job = self.inner.get(job_id)
        if job is None or job.state != RUNNING:
            return False
        return self.inner.complete(job_id, job.lease_token or "")


class ReopenResetsAttempts(OnDisk):
    """A restart loads jobs without their attempt counter (the seed design's gotcha)."""

    def on_reopen(self) -> None:
        # No public transition sets an attempt; ``_jobs`` is MemoryStorage's record
        # dict, and attempt is in none of its indexes.
        for job in self._all():
            self.inner._jobs[job.id] = replace(job, attempt=0)


class ReopenDropsDead(OnDisk):
    """Dead jobs are not persisted: a restart loses them."""

    def on_reopen(self) -> None:
        for job in self._all(state=DEAD):
            self.inner.delete(job.id)


class SerialIgnoresHead(Wrapper):
    """A serial claim is just a claim of one: it runs past a dead or running head."""

    def claim(
        self, worker: str, limit: int, *, serial: bool = False, **kwargs: Any
    ) -> list[JobRecord]:
        return super().claim(worker, min(limit, 1) if serial else limit, **kwargs)


class FifoById(Wrapper):
    """Breaks ties on run_at by job id instead of by seq."""

    def claim(
        self, worker: str, limit: int, *, now: float, serial: bool = False, **kwargs: Any
    ) -> list[JobRecord]:
        if serial:
            return super().claim(worker, limit, now=now, serial=True, **kwargs)
        runnable = [j for j in self._all(state=WAITING, worker=worker) if j.run_at <= now]
        wanted = {j.id for j in sorted(runnable, key=lambda j: (j.run_at, j.id))[:limit]}
        # Claim every runnable job, then give back the ones not wanted (a release
        # restores them exactly), so only the choice of jobs differs.
        taken = super().claim(worker, len(runnable), now=now, **kwargs)
        for job in taken:
            if job.id not in wanted:
                self.inner.release(job.id, job.lease_token or "")
        return sorted((j for j in taken if j.id in wanted), key=lambda j: (j.run_at, j.id))


class BatchNotAtomic(Wrapper):
    """Inserts a batch row by row: a duplicate fails the call after earlier rows landed."""

    def enqueue(self, jobs: Sequence[NewJob]) -> None:
        for job in jobs:
            self.inner.enqueue([job])


class CountsScheduledOffByOne(Wrapper):
    """Counts a job whose run_at is exactly now as scheduled, not runnable."""

    def counts(self, now: float) -> dict[str, Counts]:
        counts = self.inner.counts(now)
        for job in self._all(state=WAITING):
            if job.run_at == now:
                row = counts[job.worker]
                counts[job.worker] = replace(
                    row, waiting=row.waiting - 1, scheduled=row.scheduled + 1
                )
        return counts


class RecoverByRelease(Wrapper):
    """Recovers a lost job like a graceful release: the attempt is not counted, a job
    on its last attempt never dies, and no error is recorded."""

    def recover(self, now: float, *, owner: str | None = None, error: str) -> Recovered:
        back = []
        for job in self._all(state=RUNNING):
            expired = job.lease_expires is not None and job.lease_expires <= now
            if expired or (owner is not None and job.lease_owner == owner):
                self.inner.release(job.id, job.lease_token or "")
                back.append(job.id)
        return Recovered(waiting=tuple(back))


class ReleaseAsRetry(Wrapper):
    """release() is a retry without delay: it counts the attempt and records an error."""

    def release(self, job_id: str, token: str) -> bool:
        job = self.inner.get(job_id)
        if job is None:
            return False
        return self.inner.schedule_retry(job_id, token, run_at=job.run_at, error="released")


class RequeueAsNewJob(Wrapper):
    """A manual retry deletes the dead job and enqueues a copy: it gets a new seq."""

    def requeue(self, job_id: str, new_id: str, *, now: float) -> RequeueResult:
        job = self.inner.get(job_id)
        if job is None:
            return "missing"
        if job.state != DEAD:
            return "not_dead"
        self.inner.delete(job_id)
        self.inner.enqueue(
            [
                NewJob(
                    id=new_id,
                    worker=job.worker,
                    payload=job.payload,
                    run_at=now,
                    enqueued_at=job.enqueued_at,
                    max_attempts=job.max_attempts,
                )
            ]
        )
        return "requeued"


class ExtendIgnoresToken(Wrapper):
    """extend() renews every listed running job, whoever holds it."""

    def extend(self, token: str, job_ids: Sequence[str], lease_until: float) -> list[str]:
        extended = []
        for job_id in job_ids:
            job = self.inner.get(job_id)
            if job is not None and job.state == RUNNING:
                extended += self.inner.extend(job.lease_token or "", [job_id], lease_until)
        return extended


class DeleteRemovesRunning(Wrapper):
    """delete() removes a running job instead of refusing it."""

    def delete(self, job_id: str) -> DeleteResult:
        job = self.inner.get(job_id)
        if job is not None and job.state == RUNNING:
            self.inner.release(job_id, job.lease_token or "")
        return self.inner.delete(job_id)


class DropsWakeupBetweenWaits(Wrapper):
    """Forgets every transition made while no wait is in progress."""

    def wait_for_jobs(self, timeout: float) -> bool:
        # One short throwaway wait consumes whatever happened since the last one.
        self.inner.wait_for_jobs(0)
        return self.inner.wait_for_jobs(timeout)


BROKEN: dict[str, Callable[[], Callable[[], Storage]]] = {
    "scheduled job claimable early": lambda: ClaimsEarly,
    "claim takes running jobs": lambda: StealsRunning,
    "stale token accepted": lambda: AcceptsStaleToken,
    "attempts reset by reopen": lambda: on_disk(ReopenResetsAttempts),
    "dead jobs dropped by reopen": lambda: on_disk(ReopenDropsDead),
    "serial type runs past its head": lambda: SerialIgnoresHead,
    "FIFO broken for equal run_at": lambda: FifoById,
    "batch enqueue not all-or-nothing": lambda: BatchNotAtomic,
    "counts off by one for scheduled": lambda: CountsScheduledOffByOne,
    "recovery does not count the attempt": lambda: RecoverByRelease,
    "release counts the attempt": lambda: ReleaseAsRetry,
    "requeue changes seq": lambda: RequeueAsNewJob,
    "extend ignores the token": lambda: ExtendIgnoresToken,
    "delete removes a running job": lambda: DeleteRemovesRunning,
    "wake-up between waits lost": lambda: DropsWakeupBetweenWaits,
}


@pytest.mark.parametrize("bug", list(BROKEN))
def test_suite_fails_on_broken_backend(bug: str) -> None:
    failures = run_suite(BROKEN[bug](), POWER)
    assert failures, f"the conformance suite passed a backend with this bug: {bug}"


# Wake-ups are outside the model (it never waits): the targeted check covers them.
MODEL_BLIND = {"wake-up between waits lost"}


@pytest.mark.parametrize("bug", [bug for bug in BROKEN if bug not in MODEL_BLIND])
def test_state_machine_alone_finds_the_bug(bug: str) -> None:
    # The model is the heart of the suite: it must catch every one of these on its own.
    failures = run_suite(BROKEN[bug](), POWER, only=["state_machine"])
    assert "state_machine" in failures, f"the state machine missed: {bug}"


@pytest.mark.parametrize(
    "make",
    [lambda: MemoryStorage, lambda: Wrapper, lambda: on_disk(OnDisk)],
    ids=["memory", "wrapper", "memory-on-disk"],
)
def test_suite_passes_correct_backends(make: Callable[[], Callable[[], Storage]]) -> None:
    failures = run_suite(make(), POWER)
    assert not failures, "\n\n".join(f"{name}: {exc}" for name, exc in failures.items())


@pytest.mark.parametrize(
    "bug, check",
    [
        ("dead jobs dropped by reopen", "reopen_keeps_everything"),
        ("requeue changes seq", "fifo_equal_run_at"),
        ("serial type runs past its head", "fifo_equal_run_at"),
        ("FIFO broken for equal run_at", "fifo_equal_run_at"),
        ("batch enqueue not all-or-nothing", "state_machine"),
        ("wake-up between waits lost", "wakeup_between_waits"),
    ],
)
def test_targeted_check_finds_the_bug(bug: str, check: str) -> None:
    # Bugs whose random discovery needs a long chain of steps also have a direct check.
    assert check in run_suite(BROKEN[bug](), POWER, only=[check])
