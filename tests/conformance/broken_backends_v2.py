"""Broken backends for protocol 2: each is a correct backend with ONE violation.

Like :mod:`tests.conformance.broken_backends` (whose :class:`Wrapper` they
build on), each bug is one a real backend grows: a claim ordered without the
priority column, a SMALLINT priority, a unique check made before the
transaction, a key lookup that forgets the worker, a period measured from the
wrong timestamp, ``<`` where ``<=`` was meant, a JSON column that drops empty
values, a tag filter through ``LIKE``. :data:`BROKEN_V2` names each, its area,
and the targeted check that must catch it. This module holds no tests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import update

from exqueue.storage import (
    DEAD,
    WAITING,
    JobRecord,
    JobState,
    NewJob,
    RequeueResult,
)
from exqueue_memory import MemoryStorage
from exqueue_memory._unique import UniqueIndex
from exqueue_sql import SQLStorage
from tests.conformance.broken_backends import (
    Bug,
    Wrapper,
    _bug,
    _cls,
    _like,
    _rewrite,
    on_sqlite,
)

# -- priority ------------------------------------------------------------------------


class OrderedClaim(Wrapper):
    """Base: a claim that picks its jobs by :meth:`order` (the bug) instead of the contract's."""

    def order(self, job: JobRecord) -> tuple[Any, ...]:
        return (job.priority, job.run_at, job.seq)

    def claim(
        self, worker: str, limit: int, *, now: float, serial: bool = False, **kwargs: Any
    ) -> list[JobRecord]:
        if serial:
            return super().claim(worker, limit, now=now, serial=True, **kwargs)
        runnable = [
            j
            for j in self._all(state=WAITING, worker=worker)
            if j.run_at <= now and (j.expires_at is None or j.expires_at > now)
        ]
        wanted = {j.id for j in sorted(runnable, key=self.order)[: max(limit, 0)]}
        # Claim every runnable job, then give back the ones not wanted (a release
        # restores them exactly), so only the choice of jobs differs.
        taken = super().claim(worker, len(runnable), now=now, **kwargs)
        for job in taken:
            if job.id not in wanted:
                self.inner.release(job.id, job.lease_token or "")
        return sorted((j for j in taken if j.id in wanted), key=self.order)


class IgnoresPriority(OrderedClaim):
    """Claims by (run_at, seq): the v1 index, the priority column never added to it."""

    def order(self, job: JobRecord) -> tuple[Any, ...]:
        return (job.run_at, job.seq)


class SeqBeforeRunAt(OrderedClaim):
    """Claims by (priority, seq, run_at): an index with its columns in the wrong order."""

    def order(self, job: JobRecord) -> tuple[Any, ...]:
        return (job.priority, job.seq, job.run_at)


class SerialByPriority(Wrapper):
    """A serial type's head is its job with the lowest (priority, seq), not the lowest seq."""

    def claim(
        self, worker: str, limit: int, *, now: float, serial: bool = False, **kwargs: Any
    ) -> list[JobRecord]:
        if not serial or limit <= 0:
            return super().claim(worker, limit, now=now, serial=serial, **kwargs)
        jobs = self._all(worker=worker)
        if not jobs:
            return []
        head = min(jobs, key=lambda j: (j.priority, j.seq))
        if head.state != WAITING or head.run_at > now:
            return []
        if head.expires_at is not None and head.expires_at <= now:
            return []
        runnable = [j for j in jobs if j.state == WAITING and j.run_at <= now]
        taken = super().claim(worker, len(runnable), now=now, **kwargs)
        for job in taken:
            if job.id != head.id:
                self.inner.release(job.id, job.lease_token or "")
        return [j for j in taken if j.id == head.id]


class PriorityInt16(Wrapper):
    """Stores priority in a SMALLINT: values beyond int16 are clamped."""

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        return self.inner.enqueue(
            [replace(j, priority=max(-(2**15), min(2**15 - 1, j.priority))) for j in jobs]
        )


# -- unique jobs ---------------------------------------------------------------------


class _CheckThenInsert(UniqueIndex):
    """The key lookup ends its own transaction before the insert begins."""

    def __init__(self, lock: Any) -> None:
        super().__init__()
        self.lock = lock

    def holder(self, job: NewJob, jobs: Mapping[str, JobRecord]) -> str | None:
        found = super().holder(job, jobs)
        self.lock.release()
        try:
            time.sleep(0.001)  # the round trip between the SELECT and the INSERT
        finally:
            self.lock.acquire()
        return found


class UniqueOutsideTransaction(MemoryStorage):
    """Looks the key up, then inserts in a second step: racing enqueuers both insert."""

    def __init__(self, url: str | None = None) -> None:
        super().__init__(url)
        self._unique = _CheckThenInsert(self._lock)


class SQLUniqueOutsideTransaction(SQLStorage):
    """Looks unique keys up in one transaction, inserts in the next: racing processes both insert.

    The lookup and the insert are each atomic; the gap between them is the bug.
    """

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        answers: list[str] = []
        keep: list[NewJob] = []
        keys: dict[str, tuple[str, str]] = {}
        for job in jobs:
            holder = None
            if job.unique is not None:
                key = (job.worker, job.unique.key)
                states = job.unique.states | {WAITING}
                stored = self.list_jobs(worker=job.worker, limit=1_000_000)
                holder = next(
                    (r.id for r in stored if r.unique_key == key[1] and r.state in states),
                    next((i for i, k in keys.items() if k == key), None),
                )
                if holder is None:
                    keys[job.id] = key
            answers.append(job.id if holder is None else holder)
            if holder is None:
                keep.append(replace(job, unique=None))
        time.sleep(0.005)  # the round trip between the SELECT and the INSERT
        super().enqueue(keep)
        if keys:
            table = self._jobs
            with self.engine.begin() as conn:
                for job_id, (_, key) in keys.items():
                    conn.execute(update(table).where(table.c.id == job_id).values(unique_key=key))
        return answers


class UniqueAcrossWorkers(Wrapper):
    """Looks a unique key up without the worker: keys of different types collide."""

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        answers: list[str | None] = []
        keep: list[NewJob] = []
        for job in jobs:
            holder = None
            if job.unique is not None:
                states = job.unique.states | {WAITING}
                holder = next(
                    (
                        j.id
                        for j in [*self._all(), *(replace_record(k) for k in keep)]
                        if j.unique_key == job.unique.key and j.state in states
                    ),
                    None,
                )
            answers.append(holder)
            if holder is None:
                keep.append(job)
        if len({j.id for j in jobs}) != len(jobs) or any(self.inner.get(j.id) for j in jobs):
            raise ValueError("duplicate job id in enqueue batch")
        stored = iter(self.inner.enqueue(keep))
        return [answer if answer is not None else next(stored) for answer in answers]


def replace_record(job: NewJob) -> JobRecord:
    """A waiting record for a job of the batch not stored yet (for the lookup above)."""
    key = job.unique.key if job.unique is not None else None
    return JobRecord(
        job.id, 0, job.worker, b"", WAITING, 0, 1, job.run_at, job.enqueued_at, unique_key=key
    )


class PeriodFromEnqueue(Wrapper):
    """A completed job holds its key until enqueued_at + period, not completed_at + period."""

    def complete(self, job_id: str, token: str, *, now: float | None = None) -> bool:
        job = self.inner.get(job_id)
        since = None if now is None or job is None else job.enqueued_at
        return self.inner.complete(job_id, token, now=since)


class UniqueCoversDead(Wrapper):
    """A dead job always holds its key (the state list in the lookup is hard-coded)."""

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        return self.inner.enqueue(
            [
                replace(j, unique=replace(j.unique, states=j.unique.states | {DEAD}))
                if j.unique is not None
                else j
                for j in jobs
            ]
        )


class BatchDuplicatesUnseen(Wrapper):
    """Checks each job of a batch against the store only: duplicates inside it are stored."""

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        seen: set[tuple[str, str]] = set()
        again: dict[str, str] = {}
        batch = []
        for job in jobs:
            if job.unique is not None:
                key = (job.worker, job.unique.key)
                if key in seen:
                    again[job.id] = job.unique.key
                    job = replace(job, unique=None)
                seen.add(key)
            batch.append(job)
        answers = self.inner.enqueue(batch)
        for job_id, key in again.items():
            _rewrite(self.inner, job_id, unique_key=key)
        return answers


# -- expiry --------------------------------------------------------------------------


class ClaimsExpired(Wrapper):
    """claim() never looks at expires_at: expired jobs run."""

    def hidden(self, job: JobRecord, now: float) -> bool:
        return job.expires_at is not None and job.expires_at <= now

    def claim(self, worker: str, limit: int, *, now: float, **kwargs: Any) -> list[JobRecord]:
        hidden = {
            j.id: j.expires_at
            for j in self._all(state=WAITING, worker=worker)
            if self.hidden(j, now)
        }
        for job_id in hidden:
            _rewrite(self.inner, job_id, expires_at=None)
        try:
            taken = super().claim(worker, limit, now=now, **kwargs)
        finally:
            for job_id, expires_at in hidden.items():
                _rewrite(self.inner, job_id, expires_at=expires_at)
        return [replace(r, expires_at=hidden.get(r.id, r.expires_at)) for r in taken]


class ClaimsExpiringNow(ClaimsExpired):
    """claim() takes a job whose expires_at == now (``<`` where ``<=`` was meant)."""

    def hidden(self, job: JobRecord, now: float) -> bool:
        return job.expires_at == now


class ExpireForgetsError(Wrapper):
    """expire() marks jobs dead without recording the EXPIRED error."""

    def expire(self, now: float, *, limit: int = 1000) -> list[str]:
        expired = self.inner.expire(now, limit=limit)
        for job_id in expired:
            job = self.inner.get(job_id)
            if job is not None:
                _rewrite(
                    self.inner, job_id, errors=job.errors[:-1], error_count=job.error_count - 1
                )
        return expired


class ExpireCountsAttempt(Wrapper):
    """expire() buries through the failure path, which counts an attempt."""

    def expire(self, now: float, *, limit: int = 1000) -> list[str]:
        expired = self.inner.expire(now, limit=limit)
        for job_id in expired:
            job = self.inner.get(job_id)
            if job is not None:
                _rewrite(self.inner, job_id, attempt=job.attempt + 1)
        return expired


class ExpireStrictBoundary(Wrapper):
    """expire(now) takes expires_at < now: a job expiring exactly now is left waiting."""

    def expire(self, now: float, *, limit: int = 1000) -> list[str]:
        return self.inner.expire(math.nextafter(now, -math.inf), limit=limit)


# -- metadata ------------------------------------------------------------------------


class RequeueDropsMeta(Wrapper):
    """requeue() copies the row without its meta column."""

    def requeue(self, job_id: str, new_id: str, *, now: float) -> RequeueResult:
        result = self.inner.requeue(job_id, new_id, now=now)
        if result == "requeued":
            _rewrite(self.inner, new_id, meta={})
        return result


class RequeueResetsPriority(Wrapper):
    """requeue() inserts the job anew with the default priority."""

    def requeue(self, job_id: str, new_id: str, *, now: float) -> RequeueResult:
        result = self.inner.requeue(job_id, new_id, now=now)
        if result == "requeued":
            _rewrite(self.inner, new_id, priority=0)
        return result


class MetaDropsEmptyValues(Wrapper):
    """Stores meta through a serializer that skips empty values."""

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        return self.inner.enqueue(
            [replace(j, meta={k: v for k, v in j.meta.items() if v}) for j in jobs]
        )


class TimeoutWholeSeconds(Wrapper):
    """Stores timeout in an INTEGER column."""

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        return self.inner.enqueue(
            [replace(j, timeout=None if j.timeout is None else float(int(j.timeout))) for j in jobs]
        )


class TagFilter(Wrapper):
    """Base: list_jobs(tag=...) compares values with :meth:`matches` (the bug)."""

    def matches(self, wanted: str, value: str) -> bool:
        return wanted == value

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        worker: str | None = None,
        limit: int = 100,
        after_seq: int | None = None,
        tag: tuple[str, str] | None = None,
    ) -> list[JobRecord]:
        found = self.inner.list_jobs(
            state=state, worker=worker, limit=1_000_000, after_seq=after_seq
        )
        if tag is not None:
            key, wanted = tag
            found = [j for j in found if key in j.meta and self.matches(wanted, j.meta[key])]
        return found[: max(limit, 0)]


class TagCaseFolded(TagFilter):
    """Tags compared under a case-insensitive collation (MySQL's default)."""

    def matches(self, wanted: str, value: str) -> bool:
        return wanted.casefold() == value.casefold()


class TagLike(TagFilter):
    """Tags matched with LIKE: % and _ in a value match others."""

    def matches(self, wanted: str, value: str) -> bool:
        return _like(wanted, value)


PRIO, UQ, EXP, META, RACES = ("priority", "unique jobs", "expiry", "metadata", "races")

BROKEN_V2: dict[str, Bug] = {
    # priority
    "claims ignore priority": _bug(PRIO, "priority_order", _cls(IgnoresPriority)),
    "claims order seq before run_at": _bug(PRIO, "priority_order", _cls(SeqBeforeRunAt)),
    "serial head chosen by priority": _bug(PRIO, "serial_ignores_priority", _cls(SerialByPriority)),
    "priority kept in 16 bits": _bug(PRIO, "priority_order", _cls(PriorityInt16)),
    # unique jobs
    "unique checked outside the transaction": _bug(
        RACES, "unique_race_threads", _cls(UniqueOutsideTransaction)
    ),
    "unique checked outside the transaction (processes, SQLite)": _bug(
        RACES, "unique_race_processes", lambda: on_sqlite(SQLUniqueOutsideTransaction)
    ),
    "unique key leaks across worker types": _bug(
        UQ, "unique_per_worker", _cls(UniqueAcrossWorkers)
    ),
    "unique period measured from enqueue": _bug(UQ, "unique_period", _cls(PeriodFromEnqueue)),
    "dead state holds the key when not asked": _bug(UQ, "unique_states", _cls(UniqueCoversDead)),
    "duplicates within a batch stored": _bug(UQ, "unique_batch", _cls(BatchDuplicatesUnseen)),
    # expiry
    "expired job claimed": _bug(EXP, "expired_never_claimed", _cls(ClaimsExpired)),
    "job expiring exactly now claimed": _bug(EXP, "expired_never_claimed", _cls(ClaimsExpiringNow)),
    "expire() forgets the error": _bug(EXP, "expire", _cls(ExpireForgetsError)),
    "expire() counts an attempt": _bug(EXP, "expire", _cls(ExpireCountsAttempt)),
    "expire() leaves jobs expiring exactly now": _bug(EXP, "expire", _cls(ExpireStrictBoundary)),
    # metadata
    "requeue drops meta": _bug(META, "requeue_keeps_fields", _cls(RequeueDropsMeta)),
    "requeue resets priority": _bug(META, "requeue_keeps_fields", _cls(RequeueResetsPriority)),
    "empty meta values dropped": _bug(META, "meta_round_trip", _cls(MetaDropsEmptyValues)),
    "timeout kept in whole seconds": _bug(META, "meta_round_trip", _cls(TimeoutWholeSeconds)),
    "tag filter ignores case": _bug(META, "tag_filter", _cls(TagCaseFolded)),
    "tag filter matches with LIKE": _bug(META, "tag_filter", _cls(TagLike)),
}

#: Protocol-2 bugs the state machine must also find on its own: those it found in
#: 4 of 4 randomized runs of the power settings (the derandomized run is one fixed
#: draw, and a bug it finds 3 times in 4 would fail it after any change to the code).
MODEL_FINDS_V2: tuple[str, ...] = (
    "priority kept in 16 bits",
    "unique key leaks across worker types",
    "duplicates within a batch stored",
    "expired job claimed",
    "expire() counts an attempt",
    "empty meta values dropped",
    "tag filter matches with LIKE",
)
