"""Broken backends for the power tests: each is a correct backend with ONE contract violation.

Each is MemoryStorage (or SQLStorage on SQLite) with one realistic bug, the kind
a real backend grows: an off-by-one on a time boundary, a token check forgotten
in one transition, a VARCHAR(255) column, a LIKE where an equality was meant, a
cache. :data:`BROKEN` names each, its area of the contract, and the targeted
check that must catch it; ``tests/conformance/test_conformance_power.py`` runs them.
This module holds no tests.
"""

from __future__ import annotations

import functools
import math
import re
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from exqueue.storage import (
    DEAD,
    PERSISTENT,
    PROTOCOL_2,
    RUNNING,
    SERVER_CLOCK,
    WAITING,
    WAKEUP,
    WORKER_LOST,
    Counts,
    DeleteResult,
    FinishAndClaim,
    Finished,
    JobRecord,
    JobState,
    NewJob,
    Recovered,
    RequeueResult,
    Storage,
    claim_requested,
)
from exqueue_memory import MemoryStorage
from exqueue_sql import SQLStorage

# -- the base: every call passed to a MemoryStorage, through its public API only ------
#
# The bugs below are written against the Storage protocol, not MemoryStorage's
# internals (its indexes may change), so each wrapper keeps meaning exactly one bug.


class Wrapper:
    """A Storage that hands every call to ``inner``; subclasses bend one transition."""

    capabilities: frozenset[str] = frozenset({WAKEUP}) | PROTOCOL_2

    def __init__(self, inner: MemoryStorage | None = None) -> None:
        self.inner = inner if inner is not None else MemoryStorage()

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        return self.inner.enqueue(jobs)

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

    def complete(self, job_id: str, token: str, *, now: float | None = None) -> bool:
        return self.inner.complete(job_id, token, now=now)

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

    def expire(self, now: float, *, limit: int = 1000) -> list[str]:
        return self.inner.expire(now, limit=limit)

    def get(self, job_id: str) -> JobRecord | None:
        return self.inner.get(job_id)

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        worker: str | None = None,
        limit: int = 100,
        after_seq: int | None = None,
        tag: tuple[str, str] | None = None,
    ) -> list[JobRecord]:
        return self.inner.list_jobs(
            state=state, worker=worker, limit=limit, after_seq=after_seq, tag=tag
        )

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

    def complete(self, job_id: str, token: str, *, now: float | None = None) -> bool:
        job = self.inner.get(job_id)
        if job is None or job.state != RUNNING:
            return False
        return self.inner.complete(job_id, job.lease_token or "", now=now)


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

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        return [held for job in jobs for held in self.inner.enqueue([job])]


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


def _rewrite(storage: MemoryStorage, job_id: str, **changes: Any) -> None:
    """Edit one stored record in place, keeping MemoryStorage's claim index right.

    Only for the bugs below that corrupt what a transition wrote; ``_store``
    re-indexes a waiting job under its (new) run_at.
    """
    with storage._lock:
        job = storage._jobs.get(job_id)
        if job is not None:
            storage._store(replace(job, **changes))


class ErrorsWrapper(Wrapper):
    """Base of the error-history bugs: ``keep`` is what the 'column' keeps of the history."""

    def keep(self, errors: tuple[str, ...]) -> tuple[str, ...]:
        return errors

    def _after(self, job_id: str, ok: bool) -> bool:
        if ok:
            job = self.inner.get(job_id)
            if job is not None:
                _rewrite(self.inner, job_id, errors=self.keep(tuple(job.errors)))
        return ok

    def schedule_retry(self, job_id: str, token: str, *, run_at: float, error: str) -> bool:
        return self._after(
            job_id, super().schedule_retry(job_id, token, run_at=run_at, error=error)
        )

    def bury(self, job_id: str, token: str, *, error: str) -> bool:
        return self._after(job_id, super().bury(job_id, token, error=error))


# -- ordering ------------------------------------------------------------------------


class TiesByEnqueuedAt(Wrapper):
    """Breaks run_at ties by enqueued_at (the producer's clock), then seq."""

    def claim(
        self, worker: str, limit: int, *, now: float, serial: bool = False, **kwargs: Any
    ) -> list[JobRecord]:
        if serial:
            return super().claim(worker, limit, now=now, serial=True, **kwargs)
        runnable = [j for j in self._all(state=WAITING, worker=worker) if j.run_at <= now]
        key = lambda j: (j.run_at, j.enqueued_at, j.seq)  # noqa: E731
        wanted = {j.id for j in sorted(runnable, key=key)[: max(limit, 0)]}
        taken = super().claim(worker, len(runnable), now=now, **kwargs)
        for job in taken:
            if job.id not in wanted:
                self.inner.release(job.id, job.lease_token or "")
        return sorted((j for j in taken if j.id in wanted), key=key)


class SeqMaxPlusOne(MemoryStorage):
    """seq = MAX(seq) + 1 over the stored jobs: reused after the highest job is removed."""

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        with self._lock:
            self._seq = max((j.seq for j in self._jobs.values()), default=0)
        return super().enqueue(jobs)


class SeqReadOutsideLock(MemoryStorage):
    """Reads the next seq before taking the lock: two enqueues at once share values."""

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        start = self._seq
        time.sleep(0.001)  # the round trip between SELECT and INSERT
        self._seq = start
        return super().enqueue(jobs)


class ClaimCheckThenAct(Wrapper):
    """claim() reads the runnable jobs, then marks them running in a second step, unlocked."""

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
        if serial or limit <= 0:
            return super().claim(
                worker,
                limit,
                now=now,
                owner=owner,
                token=token,
                lease_until=lease_until,
                serial=serial,
            )
        runnable = [j for j in self._all(state=WAITING, worker=worker) if j.run_at <= now]
        runnable.sort(key=lambda j: (j.run_at, j.seq))
        time.sleep(0.001)  # the round trip between the SELECT and the UPDATE
        taken = []
        for job in runnable[:limit]:
            updated = replace(
                job,
                state=RUNNING,
                attempt=job.attempt + 1,
                lease_owner=owner,
                lease_token=token,
                lease_expires=lease_until,
            )
            self.inner._jobs[job.id] = updated
            taken.append(updated)
        return taken


class BatchSortedById(Wrapper):
    """Inserts a batch sorted by id (a bulk insert through a dict keyed by id)."""

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        stored = dict(
            zip(
                sorted(j.id for j in jobs),
                self.inner.enqueue(sorted(jobs, key=lambda j: j.id)),
                strict=True,
            )
        )
        return [stored[j.id] for j in jobs]


class BatchInChunks(Wrapper):
    """Splits a batch into transactions of 100: a late duplicate leaves earlier chunks stored."""

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        held: list[str] = []
        for start in range(0, len(jobs), 100):
            held.extend(self.inner.enqueue(jobs[start : start + 100]))
        return held


# -- error history -------------------------------------------------------------------


class ErrorsSkipRepeats(ErrorsWrapper):
    """Does not record an error equal to the previous one."""

    def keep(self, errors: tuple[str, ...]) -> tuple[str, ...]:
        return errors[:-1] if len(errors) > 1 and errors[-1] == errors[-2] else errors


class ErrorsLastTwo(ErrorsWrapper):
    """Keeps only the last two errors (a 'previous error' and 'last error' column)."""

    def keep(self, errors: tuple[str, ...]) -> tuple[str, ...]:
        return errors[-2:]


class ErrorsNewlineJoined(ErrorsWrapper):
    """Stores the history as newline-separated text: a multi-line error becomes several."""

    def keep(self, errors: tuple[str, ...]) -> tuple[str, ...]:
        return tuple("\n".join(errors).split("\n"))


class ErrorsVarchar255(ErrorsWrapper):
    """Each error in a VARCHAR(255): longer texts are cut."""

    def keep(self, errors: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(e[:255] for e in errors)


class ErrorsAsciiOnly(ErrorsWrapper):
    """A latin1/ASCII column: non-ASCII characters become '?'."""

    def keep(self, errors: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(e.encode("ascii", "replace").decode() for e in errors)


class ErrorsStripped(ErrorsWrapper):
    """Trims surrounding spaces (a CHAR column, or a .strip() 'for tidiness')."""

    def keep(self, errors: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(e.strip() for e in errors)


class BuryDropsError(Wrapper):
    """bury() sets the state but forgets to append the error."""

    def bury(self, job_id: str, token: str, *, error: str) -> bool:
        job = self.inner.get(job_id)
        ok = self.inner.bury(job_id, token, error=error)
        if ok and job is not None:
            _rewrite(self.inner, job_id, errors=job.errors)
        return ok


class ReleaseClearsErrors(Wrapper):
    """release() resets the error history along with the lease."""

    def release(self, job_id: str, token: str) -> bool:
        ok = self.inner.release(job_id, token)
        if ok:
            _rewrite(self.inner, job_id, errors=())
        return ok


class ReleaseKeepsAttempt(Wrapper):
    """release() clears the lease but does not give the attempt back."""

    def release(self, job_id: str, token: str) -> bool:
        job = self.inner.get(job_id)
        ok = self.inner.release(job_id, token)
        if ok and job is not None:
            _rewrite(self.inner, job_id, attempt=job.attempt)
        return ok


class RetryIgnoresRunAt(Wrapper):
    """schedule_retry() keeps the old run_at: the retry is runnable at once."""

    def schedule_retry(self, job_id: str, token: str, *, run_at: float, error: str) -> bool:
        job = self.inner.get(job_id)
        old = job.run_at if job is not None else run_at
        return self.inner.schedule_retry(job_id, token, run_at=old, error=error)


# -- sizes and batches ---------------------------------------------------------------


class RequeueCuts64K(Wrapper):
    """requeue() copies the payload through a 64 KiB BLOB: larger payloads are cut."""

    def requeue(self, job_id: str, new_id: str, *, now: float) -> RequeueResult:
        result = self.inner.requeue(job_id, new_id, now=now)
        job = self.inner.get(new_id)
        if result == "requeued" and job is not None:
            _rewrite(self.inner, new_id, payload=job.payload[:65535])
        return result


class CompleteManyFirst256(MemoryStorage):
    """complete_many() sends one chunk of 256 ids and forgets the rest."""

    def complete_many(
        self, items: Sequence[tuple[str, str]], *, now: float | None = None
    ) -> list[str]:
        return super().complete_many(items[:256], now=now)


class ClaimsBeforeFinishing(MemoryStorage):
    """finish_and_claim() claims first, then records the successes (a serial head waits)."""

    def finish_and_claim(self, request: FinishAndClaim) -> Finished:
        claimed = claim_requested(self, request)
        return Finished(self.complete_many(request.done, now=request.now), claimed)


class FinishIgnoresTokens(MemoryStorage):
    """finish_and_claim() completes every running job named, whatever token it is given."""

    def finish_and_claim(self, request: FinishAndClaim) -> Finished:
        done = []
        for job_id, _ in request.done:
            record = self._jobs.get(job_id)
            if record is not None and record.state == RUNNING and record.lease_token:
                done.append((job_id, record.lease_token))
        return super().finish_and_claim(replace(request, done=done))


# -- names ---------------------------------------------------------------------------


def _like(pattern: str, name: str) -> bool:
    """SQL LIKE: % is any run, _ is any one character (what '=' was meant to be)."""
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, re.DOTALL) is not None


class ListWorkerLike(Wrapper):
    """list_jobs(worker=...) filters with LIKE: % and _ match other names."""

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        worker: str | None = None,
        limit: int = 100,
        after_seq: int | None = None,
        tag: tuple[str, str] | None = None,
    ) -> list[JobRecord]:
        found = self.inner.list_jobs(state=state, limit=1_000_000, after_seq=after_seq, tag=tag)
        return [j for j in found if worker is None or _like(worker, j.worker)][: max(limit, 0)]


class ClaimWorkerLike(Wrapper):
    """claim() selects the worker with LIKE: it takes jobs of names % or _ match."""

    def claim(self, worker: str, limit: int, **kwargs: Any) -> list[JobRecord]:
        names = sorted({j.worker for j in self._all(state=WAITING) if _like(worker, j.worker)})
        taken: list[JobRecord] = []
        for name in names:
            taken += super().claim(name, limit - len(taken), **kwargs)
        return taken


class RecoverOwnerLike(Wrapper):
    """recover(owner=...) matches owners with LIKE: it takes other nodes' live leases."""

    def recover(self, now: float, *, owner: str | None = None, error: str) -> Recovered:
        if owner is None:
            return self.inner.recover(now, error=error)
        owners = {j.lease_owner or "" for j in self._all(state=RUNNING)}
        waiting: list[str] = []
        dead: list[str] = []
        for name in sorted(o for o in owners if _like(owner, o)):
            got = self.inner.recover(now, owner=name, error=error)
            waiting += got.waiting
            dead += got.dead
        return Recovered(waiting=tuple(waiting), dead=tuple(dead))


class CountsSplitOnColon(Wrapper):
    """counts() parses the worker out of a key 'ns:counts:<worker>' with split(':')."""

    def counts(self, now: float) -> dict[str, Counts]:
        merged: dict[str, Counts] = {}
        for name, row in self.inner.counts(now).items():
            key = name.split(":")[0]
            old = merged.get(key, Counts())
            merged[key] = Counts(
                old.waiting + row.waiting,
                old.scheduled + row.scheduled,
                old.running + row.running,
                old.dead + row.dead,
            )
        return merged


class CountsCaseFolded(Wrapper):
    """counts() groups by worker under a case-insensitive collation."""

    def counts(self, now: float) -> dict[str, Counts]:
        merged: dict[str, Counts] = {}
        first: dict[str, str] = {}
        for name, row in self.inner.counts(now).items():
            key = first.setdefault(name.casefold(), name)
            old = merged.get(key, Counts())
            merged[key] = Counts(
                old.waiting + row.waiting,
                old.scheduled + row.scheduled,
                old.running + row.running,
                old.dead + row.dead,
            )
        return merged


class CountsSkipDeadOnly(Wrapper):
    """counts() starts from the workers with live jobs: one with only dead jobs is missing."""

    def counts(self, now: float) -> dict[str, Counts]:
        counts = self.inner.counts(now)
        return {w: c for w, c in counts.items() if c.waiting or c.scheduled or c.running}


# -- time ----------------------------------------------------------------------------


class TimesInMilliseconds(Wrapper):
    """Stores run_at in whole milliseconds (a BIGINT of ms, or a DATETIME(3))."""

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        return self.inner.enqueue([replace(j, run_at=round(j.run_at, 3)) for j in jobs])


class EnqueuedAtWholeSeconds(Wrapper):
    """Stores enqueued_at as an integer timestamp."""

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        return self.inner.enqueue([replace(j, enqueued_at=float(int(j.enqueued_at))) for j in jobs])


class RequeueKeepsRunAt(Wrapper):
    """requeue() does not set run_at = now: the job keeps its old (past or future) run_at."""

    def requeue(self, job_id: str, new_id: str, *, now: float) -> RequeueResult:
        job = self.inner.get(job_id)
        result = self.inner.requeue(job_id, new_id, now=now)
        if result == "requeued" and job is not None:
            _rewrite(self.inner, new_id, run_at=job.run_at)
        return result


class RecoverRule(Wrapper):
    """Base of the recovery bugs: MemoryStorage's recover, rewritten with hooks."""

    def expired(self, job: JobRecord, now: float) -> bool:
        return job.lease_expires is not None and job.lease_expires <= now

    def chosen(self, job: JobRecord, now: float, owner: str | None) -> bool:
        return self.expired(job, now) or (owner is not None and job.lease_owner == owner)

    def dies(self, job: JobRecord) -> bool:
        return job.attempt >= job.max_attempts

    def recover(self, now: float, *, owner: str | None = None, error: str) -> Recovered:
        waiting: list[str] = []
        dead: list[str] = []
        for job in self._all(state=RUNNING):
            if not self.chosen(job, now, owner):
                continue
            # Through the public API: a release (then fix attempt and errors), or a bury.
            if self.dies(job):
                self.inner.bury(job.id, job.lease_token or "", error=error)
                dead.append(job.id)
            else:
                self.inner.schedule_retry(job.id, job.lease_token or "", run_at=now, error=error)
                waiting.append(job.id)
        return Recovered(waiting=tuple(waiting), dead=tuple(dead))


class RecoverCorrectly(RecoverRule):
    """No bug: proves RecoverRule itself keeps the contract (its subclasses differ by one rule)."""


class RecoverDiesEarly(RecoverRule):
    """Buries a job with one attempt left (attempt + 1 >= max_attempts)."""

    def dies(self, job: JobRecord) -> bool:
        return job.attempt + 1 >= job.max_attempts


class RecoverNeverBuries(RecoverRule):
    """Sends every recovered job back to waiting, even on its last attempt."""

    def dies(self, job: JobRecord) -> bool:
        return False


class RecoverStrictExpiry(RecoverRule):
    """Takes back leases with lease_expires < now: a lease due exactly now is kept."""

    def expired(self, job: JobRecord, now: float) -> bool:
        return job.lease_expires is not None and job.lease_expires < now


class RecoverIgnoresOwner(RecoverRule):
    """recover(owner=...) only takes expired leases: a restarted node waits out its own."""

    def chosen(self, job: JobRecord, now: float, owner: str | None) -> bool:
        return self.expired(job, now)


class RecoverOnlyOwner(RecoverRule):
    """recover(owner=...) takes that owner's jobs only, and leaves others' expired leases."""

    def chosen(self, job: JobRecord, now: float, owner: str | None) -> bool:
        return job.lease_owner == owner if owner is not None else self.expired(job, now)


class RecoverOwnText(RecoverRule):
    """Records its own fixed text instead of the error it was given."""

    def recover(self, now: float, *, owner: str | None = None, error: str) -> Recovered:
        return super().recover(now, owner=owner, error=WORKER_LOST)


class RecoverKeepsRunAt(Wrapper):
    """A recovered job keeps its old run_at instead of run_at = now."""

    def recover(self, now: float, *, owner: str | None = None, error: str) -> Recovered:
        before = {j.id: j.run_at for j in self._all(state=RUNNING)}
        got = self.inner.recover(now, owner=owner, error=error)
        for job_id in got.waiting:
            _rewrite(self.inner, job_id, run_at=before[job_id])
        return got


class ClaimStrictRunAt(Wrapper):
    """Runnable means run_at < now: a job due exactly now waits for the next poll."""

    def claim(self, worker: str, limit: int, *, now: float, **kwargs: Any) -> list[JobRecord]:
        return super().claim(worker, limit, now=math.nextafter(now, -math.inf), **kwargs)


class ClaimLimitAtLeastOne(Wrapper):
    """claim(limit=0) takes one job (LIMIT max(n, 1))."""

    def claim(self, worker: str, limit: int, **kwargs: Any) -> list[JobRecord]:
        return super().claim(worker, max(limit, 1), **kwargs)


class FencingForgetsRecovery(Wrapper):
    """recover() leaves the old token in place: the lost holder can still complete."""

    def __init__(self, inner: MemoryStorage | None = None) -> None:
        super().__init__(inner)
        self.lost: dict[str, str] = {}

    def recover(self, now: float, *, owner: str | None = None, error: str) -> Recovered:
        tokens = {j.id: j.lease_token or "" for j in self._all(state=RUNNING)}
        got = self.inner.recover(now, owner=owner, error=error)
        for job_id in got.waiting:
            self.lost[job_id] = tokens[job_id]
        return got

    def complete(self, job_id: str, token: str, *, now: float | None = None) -> bool:
        job = self.inner.get(job_id)
        if job is not None and job.state == WAITING and self.lost.get(job_id) == token:
            self.inner.delete(job_id)
            return True
        return self.inner.complete(job_id, token, now=now)


# -- views ---------------------------------------------------------------------------


class GetFollowsRequeue(Wrapper):
    """get(old id) of a requeued job still answers (an alias table never cleaned up)."""

    def __init__(self, inner: MemoryStorage | None = None) -> None:
        super().__init__(inner)
        self.aliases: dict[str, str] = {}

    def requeue(self, job_id: str, new_id: str, *, now: float) -> RequeueResult:
        result = self.inner.requeue(job_id, new_id, now=now)
        if result == "requeued":
            self.aliases[job_id] = new_id
        return result

    def get(self, job_id: str) -> JobRecord | None:
        return self.inner.get(job_id) or self.inner.get(self.aliases.get(job_id, ""))


class DeleteRunningSaysMissing(Wrapper):
    """delete() of a running job keeps it but answers 'missing' (its DELETE skips running rows)."""

    def delete(self, job_id: str) -> DeleteResult:
        result = self.inner.delete(job_id)
        return "missing" if result == "running" else result


class DeleteOnlyWaiting(Wrapper):
    """delete() removes waiting jobs only: a dead job is kept and reported 'missing'."""

    def delete(self, job_id: str) -> DeleteResult:
        job = self.inner.get(job_id)
        if job is not None and job.state == DEAD:
            return "missing"
        return self.inner.delete(job_id)


class ListLimitFirst(Wrapper):
    """list_jobs() cuts at limit, then filters (LIMIT in a subquery, WHERE outside)."""

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        worker: str | None = None,
        limit: int = 100,
        after_seq: int | None = None,
        tag: tuple[str, str] | None = None,
    ) -> list[JobRecord]:
        page = self.inner.list_jobs(limit=limit, after_seq=after_seq, tag=tag)
        return [
            j for j in page if (state is None or j.state == state) and (worker in (None, j.worker))
        ]


class ListAfterSeqInclusive(Wrapper):
    """list_jobs(after_seq=s) includes the job with seq s (>= instead of >)."""

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        worker: str | None = None,
        limit: int = 100,
        after_seq: int | None = None,
        tag: tuple[str, str] | None = None,
    ) -> list[JobRecord]:
        after = None if after_seq is None else after_seq - 1
        return self.inner.list_jobs(
            state=state, worker=worker, limit=limit, after_seq=after, tag=tag
        )


class ListFiltersOr(Wrapper):
    """list_jobs(state=..., worker=...) joins the two filters with OR."""

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        worker: str | None = None,
        limit: int = 100,
        after_seq: int | None = None,
        tag: tuple[str, str] | None = None,
    ) -> list[JobRecord]:
        if state is None or worker is None:
            return super().list_jobs(
                state=state, worker=worker, limit=limit, after_seq=after_seq, tag=tag
            )
        found = self.inner.list_jobs(limit=1_000_000, after_seq=after_seq, tag=tag)
        return [j for j in found if j.state == state or j.worker == worker][: max(limit, 0)]


# -- persistence ---------------------------------------------------------------------


class ReopenLosesErrors(OnDisk):
    """The error history is not persisted: a restart loads jobs without it."""

    def on_reopen(self) -> None:
        for job in self._all():
            _rewrite(self.inner, job.id, errors=())


class ReopenRestartsSeq(OnDisk):
    """The seq counter lives in memory: after a restart new jobs get small seq values."""

    def on_reopen(self) -> None:
        self.inner._seq = 0


class ReopenForgetsLeases(OnDisk):
    """Lease tokens are not persisted: after a restart no holder can finish its job."""

    def on_reopen(self) -> None:
        for job in self._all(state=RUNNING):
            self.inner._jobs[job.id] = replace(job, lease_token="")


SQLITE = "sqlite:///{}/jobs.db"


def on_sqlite(cls: type[SQLStorage]) -> Callable[[], Storage]:
    """A picklable factory: every call opens ``cls`` over one new SQLite file."""
    return functools.partial(cls, SQLITE.format(tempfile.mkdtemp(prefix="exqueue-power-")))


class SQLCachedGet(SQLStorage):
    """get() answers from a per-object cache, refreshed only by this object's own writes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cache: dict[str, JobRecord | None] = {}

    def get(self, job_id: str) -> JobRecord | None:
        if job_id not in self.cache:
            self.cache[job_id] = super().get(job_id)
        return self.cache[job_id]

    def __getattribute__(self, name: str) -> Any:
        # Every transition of this object drops the cache (a write-through cache).
        if name in WRITES:
            object.__getattribute__(self, "cache").clear()
        return object.__getattribute__(self, name)


WRITES = frozenset(
    {"enqueue", "claim", "complete", "complete_many", "schedule_retry", "bury", "release"}
    | {"extend", "recover", "delete", "requeue", "enqueue_in"}
)


class SQLEnqueueInCommits(SQLStorage):
    """enqueue_in() commits the caller's connection itself ('to be safe')."""

    def enqueue_in(self, transaction: object, jobs: Sequence[NewJob]) -> None:
        super().enqueue_in(transaction, jobs)
        commit = getattr(transaction, "commit", None)
        if callable(commit):
            commit()


# -- wake-ups ------------------------------------------------------------------------


class Muted(MemoryStorage):
    """MemoryStorage whose ``mute`` transitions make a job runnable without waking anyone."""

    mute = ""

    def _notify(self) -> None:
        if not getattr(self._muting, "on", False):
            super()._notify()

    def __init__(self, url: str | None = None) -> None:
        super().__init__(url)
        self._muting = threading.local()

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if name == object.__getattribute__(self, "mute"):

            def muted(*args: Any, **kwargs: Any) -> Any:
                self._muting.on = True
                try:
                    return value(*args, **kwargs)
                finally:
                    self._muting.on = False

            return muted
        return value


class RetryWakesNobody(Muted):
    """schedule_retry() makes a job runnable but sends no wake-up."""

    mute = "schedule_retry"


class ReleaseWakesNobody(Muted):
    """release() makes a job runnable but sends no wake-up."""

    mute = "release"


class RequeueWakesNobody(Muted):
    """requeue() makes a job runnable but sends no wake-up."""

    mute = "requeue"


class RecoverWakesNobody(Muted):
    """recover() makes jobs runnable but sends no wake-up."""

    mute = "recover"


class ServerClockInMilliseconds(Wrapper):
    """server_time() reads the store's clock in milliseconds (a unit slip)."""

    capabilities = frozenset({WAKEUP, SERVER_CLOCK})

    def server_time(self) -> float:
        return time.time() * 1000.0


class ServerClockWholeSeconds(Wrapper):
    """server_time() returns whole seconds (Redis TIME without its microseconds)."""

    capabilities = frozenset({WAKEUP, SERVER_CLOCK})

    def server_time(self) -> float:
        return int(time.time())  # type: ignore[return-value]


@dataclass(frozen=True)
class Bug:
    """A broken backend: how to make its factory, its area, and the check that must catch it."""

    make: Callable[[], Callable[[], Storage]]
    area: str
    check: str


def _bug(area: str, check: str, make: Callable[[], Callable[[], Storage]]) -> Bug:
    return Bug(make, area, check)


def _cls(cls: type[Any]) -> Callable[[], Callable[[], Storage]]:
    return lambda: cls  # type: ignore[no-any-return]


ORDER, C, F, D, L, P, K, R = (
    "enqueue and ordering",
    "claims and leases",
    "failure paths",
    "dead jobs and requeue",
    "listing and counts",
    "persistence",
    "capabilities",
    "races",
)

BROKEN: dict[str, Bug] = {
    # enqueue and ordering
    "FIFO broken for equal run_at": _bug(ORDER, "fifo_equal_run_at", _cls(FifoById)),
    "ties broken by enqueued_at": _bug(ORDER, "ties_ignore_enqueued_at", _cls(TiesByEnqueuedAt)),
    "seq reused after the highest job is removed": _bug(
        ORDER, "seq_never_reused", _cls(SeqMaxPlusOne)
    ),
    "seq read outside the lock (concurrent enqueue)": _bug(
        R, "concurrent_enqueue", _cls(SeqReadOutsideLock)
    ),
    "claim not atomic (select, then update)": _bug(R, "thread_race", _cls(ClaimCheckThenAct)),
    "batch inserted in id order": _bug(ORDER, "batch_order", _cls(BatchSortedById)),
    "batch enqueue not all-or-nothing": _bug(ORDER, "batch_late_duplicate", _cls(BatchNotAtomic)),
    "batch over 100 committed in chunks": _bug(ORDER, "batch_late_duplicate", _cls(BatchInChunks)),
    "run_at kept in milliseconds": _bug(ORDER, "time_precision", _cls(TimesInMilliseconds)),
    "enqueued_at kept in whole seconds": _bug(
        ORDER, "time_precision", _cls(EnqueuedAtWholeSeconds)
    ),
    # claims and leases
    "scheduled job claimable early": _bug(C, "claim_due_boundary", _cls(ClaimsEarly)),
    "job due exactly now not claimable": _bug(C, "claim_due_boundary", _cls(ClaimStrictRunAt)),
    "claim takes running jobs": _bug(C, "claim_takes_waiting_only", _cls(StealsRunning)),
    "claim with limit 0 takes one": _bug(C, "claim_takes_waiting_only", _cls(ClaimLimitAtLeastOne)),
    "serial type runs past its head": _bug(C, "fifo_equal_run_at", _cls(SerialIgnoresHead)),
    "stale token accepted": _bug(C, "fencing", _cls(AcceptsStaleToken)),
    "extend ignores the token": _bug(C, "fencing", _cls(ExtendIgnoresToken)),
    "lost holder completes after recovery": _bug(C, "fencing", _cls(FencingForgetsRecovery)),
    "lease due exactly now not recovered": _bug(C, "recover_boundary", _cls(RecoverStrictExpiry)),
    "recover(owner) ignores the owner": _bug(C, "recover_by_owner", _cls(RecoverIgnoresOwner)),
    "recover(owner) skips expired leases of others": _bug(
        C, "recover_by_owner", _cls(RecoverOnlyOwner)
    ),
    "recover(owner) matches owners with LIKE": _bug(C, "recover_by_owner", _cls(RecoverOwnerLike)),
    "recovery does not count the attempt": _bug(C, "recover_last_attempt", _cls(RecoverByRelease)),
    "recovery buries a job with an attempt left": _bug(
        C, "recover_last_attempt", _cls(RecoverDiesEarly)
    ),
    "recovery never buries the last attempt": _bug(
        C, "recover_last_attempt", _cls(RecoverNeverBuries)
    ),
    "recovery records its own error text": _bug(C, "recover_last_attempt", _cls(RecoverOwnText)),
    "recovered job keeps its old run_at": _bug(C, "recover_last_attempt", _cls(RecoverKeepsRunAt)),
    # failure paths
    "identical consecutive errors recorded once": _bug(F, "error_history", _cls(ErrorsSkipRepeats)),
    "only the last two errors kept": _bug(F, "error_history", _cls(ErrorsLastTwo)),
    "errors stored newline-joined": _bug(F, "error_history", _cls(ErrorsNewlineJoined)),
    "errors cut at 255 characters": _bug(F, "error_history", _cls(ErrorsVarchar255)),
    "non-ASCII errors mangled": _bug(F, "error_history", _cls(ErrorsAsciiOnly)),
    "errors stripped of spaces": _bug(F, "error_history", _cls(ErrorsStripped)),
    "bury records no error": _bug(F, "retry_and_bury", _cls(BuryDropsError)),
    "retry ignores its run_at": _bug(F, "retry_and_bury", _cls(RetryIgnoresRunAt)),
    "release counts the attempt": _bug(F, "release", _cls(ReleaseAsRetry)),
    "release keeps the attempt": _bug(F, "release", _cls(ReleaseKeepsAttempt)),
    "release clears the errors": _bug(F, "release", _cls(ReleaseClearsErrors)),
    # dead jobs and requeue
    "requeue changes seq": _bug(D, "fifo_equal_run_at", _cls(RequeueAsNewJob)),
    "requeue cuts payloads over 64 KiB": _bug(D, "requeue", _cls(RequeueCuts64K)),
    "requeue keeps the old run_at": _bug(D, "requeue", _cls(RequeueKeepsRunAt)),
    "get of a requeued job's old id answers": _bug(D, "requeue", _cls(GetFollowsRequeue)),
    "delete removes a running job": _bug(D, "delete", _cls(DeleteRemovesRunning)),
    "delete of a running job answers 'missing'": _bug(D, "delete", _cls(DeleteRunningSaysMissing)),
    "delete keeps dead jobs": _bug(D, "delete", _cls(DeleteOnlyWaiting)),
    # listing and counts
    "counts off by one for scheduled": _bug(L, "counts", _cls(CountsScheduledOffByOne)),
    "counts omit a worker with only dead jobs": _bug(L, "counts", _cls(CountsSkipDeadOnly)),
    "counts split worker names on ':'": _bug(L, "exact_names", _cls(CountsSplitOnColon)),
    "counts merge names that differ by case": _bug(
        L, "unicode_worker_names", _cls(CountsCaseFolded)
    ),
    "list_jobs(worker) matches with LIKE": _bug(L, "exact_names", _cls(ListWorkerLike)),
    "claim(worker) matches with LIKE": _bug(L, "exact_names", _cls(ClaimWorkerLike)),
    "list_jobs applies its limit before its filters": _bug(L, "list_filters", _cls(ListLimitFirst)),
    "list_jobs after_seq inclusive": _bug(L, "list_filters", _cls(ListAfterSeqInclusive)),
    "list_jobs joins filters with OR": _bug(L, "list_filters", _cls(ListFiltersOr)),
    # persistence
    "attempts reset by reopen": _bug(
        P, "reopen_keeps_everything", lambda: on_disk(ReopenResetsAttempts)
    ),
    "dead jobs dropped by reopen": _bug(
        P, "reopen_keeps_everything", lambda: on_disk(ReopenDropsDead)
    ),
    "errors dropped by reopen": _bug(
        P, "reopen_keeps_everything", lambda: on_disk(ReopenLosesErrors)
    ),
    "seq restarts after reopen": _bug(
        P, "reopen_keeps_everything", lambda: on_disk(ReopenRestartsSeq)
    ),
    "leases forgotten by reopen": _bug(
        P, "reopen_keeps_everything", lambda: on_disk(ReopenForgetsLeases)
    ),
    "get answers from a stale cache": _bug(
        P, "second_object_sees_changes", lambda: on_sqlite(SQLCachedGet)
    ),
    # capabilities
    "transactional enqueue commits on its own": _bug(
        K, "transactional_enqueue", lambda: on_sqlite(SQLEnqueueInCommits)
    ),
    "complete_many stops after 256 pairs": _bug(K, "complete_many", _cls(CompleteManyFirst256)),
    "finish_and_claim claims before it finishes": _bug(
        K, "finish_and_claim", _cls(ClaimsBeforeFinishing)
    ),
    "finish_and_claim ignores the tokens": _bug(K, "finish_and_claim", _cls(FinishIgnoresTokens)),
    "wake-up between waits lost": _bug(K, "wakeup_between_waits", _cls(DropsWakeupBetweenWaits)),
    "retry wakes nobody": _bug(K, "wakeup_between_waits", _cls(RetryWakesNobody)),
    "release wakes nobody": _bug(K, "wakeup_between_waits", _cls(ReleaseWakesNobody)),
    "requeue wakes nobody": _bug(K, "wakeup_between_waits", _cls(RequeueWakesNobody)),
    "recover wakes nobody": _bug(K, "wakeup_between_waits", _cls(RecoverWakesNobody)),
    "server clock in milliseconds": _bug(K, "server_clock", _cls(ServerClockInMilliseconds)),
    "server clock in whole seconds": _bug(K, "server_clock", _cls(ServerClockWholeSeconds)),
}

#: The original fourteen and later rules, which the state machine must also find on its own.
MODEL_FINDS = (
    "scheduled job claimable early",
    "claim takes running jobs",
    "stale token accepted",
    "attempts reset by reopen",
    "dead jobs dropped by reopen",
    "serial type runs past its head",
    "FIFO broken for equal run_at",
    "batch enqueue not all-or-nothing",
    "counts off by one for scheduled",
    "recovery does not count the attempt",
    "release counts the attempt",
    "requeue changes seq",
    "extend ignores the token",
    "delete removes a running job",
    "finish_and_claim claims before it finishes",
    "finish_and_claim ignores the tokens",
)

#: Correct backends built the same ways: the suite must pass every one.
CORRECT: dict[str, Callable[[], Callable[[], Storage]]] = {
    "memory": _cls(MemoryStorage),
    "wrapper": _cls(Wrapper),
    "memory-on-disk": lambda: on_disk(OnDisk),
    "recover-rule": _cls(RecoverCorrectly),
    "sqlite": lambda: on_sqlite(SQLStorage),
}
