"""The limits area must catch broken backends: a test of the checks.

Each backend here is the memory backend with one realistic violation of a
limits or pause rule (a bound checked outside the atomic step, a slot leaked by
recovery, a rate window counted wrongly, a pause or a partition ignored); the
check named for it must fail, and the memory backend itself must pass every
check of the area. The state machine alone must catch the sequential ones too
(but a pause of a schedule: the machine has no schedules).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import settings

from conformance import run_suite
from conformance.limits import CHECKS
from conformance.machine_limits import MAX_EXAMPLES, STEPS, run_limits_machine
from conformance.profiles import get_settings
from exqueue.storage import (
    RUNNING,
    JobRecord,
    LimitedClaim,
    NewJob,
    Recovered,
)
from exqueue_memory import MemoryStorage
from tests.conformance.test_conformance_power import POWER

NAMES = [check.name for check in CHECKS]
SETTINGS = get_settings("ci")
#: The limits state machine as the ci profile runs it, derandomized (the same examples
#: every run) and without shrinking (a found failure is enough here).
MACHINE = settings(POWER, max_examples=MAX_EXAMPLES, stateful_step_count=STEPS)


class LimitOutsideAtomicStep(MemoryStorage):
    """Counts the running jobs in one step and claims in another (two queries)."""

    def claim_limited(self, request: LimitedClaim) -> list[JobRecord]:
        limits = request.limits
        if limits.concurrency is None or limits.partitioned or limits.rate is not None:
            return super().claim_limited(request)
        running = len(self.list_jobs(state=RUNNING, worker=request.worker, limit=10**6))
        room = min(limits.concurrency - running, request.limit)
        if room <= 0:
            return []
        time.sleep(0.0002)  # the round trip between the two statements
        return self.claim(
            request.worker,
            room,
            now=request.now,
            owner=request.owner,
            token=request.token,
            lease_until=request.lease_until,
        )


class RecoverKeepsSlot(MemoryStorage):
    """A slot counter that recovery forgets to decrement: a dead node's slots leak."""

    def __init__(self, url: str | None = None) -> None:
        super().__init__(url)
        self.leaked: Counter[str] = Counter()

    def recover(self, now: float, *, owner: str | None = None, error: str) -> Recovered:
        got = super().recover(now, owner=owner, error=error)
        for job_id in (*got.waiting, *got.dead):
            record = self.get(job_id)
            if record is not None:
                self.leaked[record.worker] += 1
        return got

    def claim_limited(self, request: LimitedClaim) -> list[JobRecord]:
        limits = request.limits
        leaked = self.leaked[request.worker]
        if limits.concurrency is None or limits.partitioned or not leaked:
            return super().claim_limited(request)
        fewer = replace(limits, concurrency=max(limits.concurrency - leaked, 0))
        return super().claim_limited(replace(request, limits=fewer))


class _OwnRateWindow(MemoryStorage):
    """Applies the rate itself (wrongly, per subclass) and the concurrency bound as memory."""

    def __init__(self, url: str | None = None) -> None:
        super().__init__(url)
        self.my_starts: dict[tuple[str, str | None], list[float]] = {}

    def counted(self, request: LimitedClaim, key: str | None, claimed: str) -> int:
        """The starts the window holds, besides the job just ``claimed``."""
        raise NotImplementedError

    def claim_limited(self, request: LimitedClaim) -> list[JobRecord]:
        limits = request.limits
        if limits.rate is None or limits.per is None:
            return super().claim_limited(request)
        unrated = replace(request, limits=replace(limits, rate=None, per=None))
        taken: list[JobRecord] = []
        # One job at a time, so each start counts for the next.
        while len(taken) < request.limit:
            got = super().claim_limited(replace(unrated, limit=1))
            if not got:
                break
            key = got[0].partition if limits.partitioned else None
            if self.counted(request, key, got[0].id) >= limits.rate:
                self.release(got[0].id, request.token)
                break
            self.my_starts.setdefault((request.worker, key), []).append(request.now)
            taken += got
        return taken


class FixedRateWindow(_OwnRateWindow):
    """Counts starts in a window fixed at multiples of ``per``, not the sliding one."""

    def counted(self, request: LimitedClaim, key: str | None, claimed: str) -> int:
        per = request.limits.per or 1.0
        since = math.floor(request.now / per) * per
        return sum(1 for t in self.my_starts.get((request.worker, key), []) if t >= since)


class RateCountsLiveJobs(_OwnRateWindow):
    """Counts only the window's claims whose jobs are still running: completions free rate."""

    def counted(self, request: LimitedClaim, key: str | None, claimed: str) -> int:
        per = request.limits.per or 1.0
        return sum(
            1
            for job in self.list_jobs(state=RUNNING, worker=request.worker, limit=10**6)
            if job.id != claimed
            and job.started_at is not None
            and job.started_at > request.now - per
            and (not request.limits.partitioned or job.partition == key)
        )


class PauseIgnored(MemoryStorage):
    """Remembers pauses but claims paused types anyway."""

    def pause(self, worker: str, paused: bool) -> None:
        ignored: set[str] = self.__dict__.setdefault("_ignored", set())
        (ignored.add if paused else ignored.discard)(worker)

    def paused(self) -> frozenset[str]:
        return frozenset(self.__dict__.get("_ignored", ()))


class PauseOnlyPlainClaims(MemoryStorage):
    """Checks the pause in claim but not in claim_limited."""

    def claim_limited(self, request: LimitedClaim) -> list[JobRecord]:
        saved = self._paused_types
        self._paused_types = frozenset()
        try:
            return super().claim_limited(request)
        finally:
            self._paused_types = saved


class PauseScriptShared(MemoryStorage):
    """Runs whichever pause (of a worker type or of a schedule) the object ran first for
    both: two areas' scripts cached under one name, as RedisStorage once did."""

    def pause(self, worker: str, paused: bool) -> None:
        if self.__dict__.setdefault("_first_pause", "type") == "schedule":
            super().pause_schedule(worker, paused)
        else:
            super().pause(worker, paused)

    def pause_schedule(self, schedule: str, paused: bool) -> None:
        if self.__dict__.setdefault("_first_pause", "schedule") == "type":
            super().pause(schedule, paused)
        else:
            super().pause_schedule(schedule, paused)


class PartitionIgnored(MemoryStorage):
    """Applies a partitioned bound to the whole worker type."""

    def claim_limited(self, request: LimitedClaim) -> list[JobRecord]:
        limits = replace(request.limits, partitioned=False)
        return super().claim_limited(replace(request, limits=limits))


class PartitionNotStored(MemoryStorage):
    """Drops the partition at enqueue (an old column list)."""

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        return super().enqueue([replace(job, partition=None) for job in jobs])


class DeadErrorIgnored(MemoryStorage):
    """Stores a dead_error job as an ordinary waiting job: it runs."""

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        return super().enqueue([replace(job, dead_error=None) for job in jobs])


@pytest.mark.parametrize(
    ("broken", "caught_by"),
    [
        (LimitOutsideAtomicStep, "limits_thread_race"),
        (RecoverKeepsSlot, "limits_slot_freed"),
        (FixedRateWindow, "limits_rate_window"),
        (RateCountsLiveJobs, "limits_rate_window"),
        (PauseIgnored, "limits_pause"),
        (PauseOnlyPlainClaims, "limits_pause"),
        (PauseScriptShared, "limits_pause_apart"),
        (PartitionIgnored, "limits_partitions"),
        (PartitionNotStored, "limits_partition_stored"),
        (DeadErrorIgnored, "limits_dead_error"),
    ],
)
def test_broken_limits_are_caught(broken: type[MemoryStorage], caught_by: str) -> None:
    failures = run_suite(broken, SETTINGS, only=[caught_by])
    assert caught_by in failures, f"{broken.__name__} passed {caught_by}"
    assert str(failures[caught_by]).startswith("rule broken: ")


@pytest.mark.parametrize(
    "broken",
    [
        RecoverKeepsSlot,
        FixedRateWindow,
        RateCountsLiveJobs,
        PauseIgnored,
        PauseOnlyPlainClaims,
        PartitionIgnored,
        PartitionNotStored,
        DeadErrorIgnored,
    ],
)
def test_state_machine_catches_sequential_breaks(broken: type[MemoryStorage]) -> None:
    """Every break that needs no race is also found by the limits state machine (but
    PauseScriptShared: the machine pauses no schedule)."""
    with pytest.raises(AssertionError):
        run_limits_machine(broken, MACHINE)


def test_state_machine_passes_memory() -> None:
    run_limits_machine(MemoryStorage, MACHINE)


def test_memory_backend_passes() -> None:
    assert run_suite(MemoryStorage, SETTINGS, only=NAMES) == {}
