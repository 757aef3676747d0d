"""MemoryStorage: an in-process, thread-safe backend; the reference for tests.

Everything lives in one dict guarded by one lock, so each transition is atomic.
Per worker, heaps index the dict so a claim costs the jobs it promotes and
takes, not the jobs waiting (see :mod:`exqueue_memory._index`, which also holds
``claim``). Nothing survives the process: use it for tests and scripts.

Protocol 2 (every capability): unique keys are indexed per ``(worker, key)``;
a job completed with a unique ``period`` leaves a completion marker that holds
its key until ``completed_at + period`` (see :mod:`exqueue_memory._unique`);
``expire`` finds due jobs through a heap by ``expires_at``.

Limits and pause (``LIMITS``, ``PAUSE``): see :mod:`exqueue_memory._limits`.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType

from exqueue.storage import (
    CANCEL,
    COMPLETE_MANY,
    DEAD,
    EXPIRED,
    HISTORY,
    LIMITS,
    NODES,
    PAUSE,
    PROTOCOL_2,
    RUNNING,
    SCHEDULES,
    SNOOZE,
    WAITING,
    WAKEUP,
    Counts,
    DeleteResult,
    JobRecord,
    JobState,
    NewJob,
    Recovered,
    RequeueResult,
    add_error,
    clip_error,
)
from exqueue.storage_next import FINISH_AND_CLAIM, FinishAndClaim, Finished, claim_requested
from exqueue.storage_scan import JOB_SCAN, JobScan, ScannedJobs
from exqueue.storage_scan import finish as finish_scan
from exqueue_memory._control import MemoryControl
from exqueue_memory._index import SLACK, MemoryIndex
from exqueue_memory._limits import MemoryLimits
from exqueue_memory._observe import MemoryObserve
from exqueue_memory._schedules import MemorySchedules
from exqueue_memory._unique import UniqueIndex

__all__ = ["MemoryStorage"]

#: The meta of every job stored without any (read-only, so sharing it is safe).
_NO_META: Mapping[str, str] = MappingProxyType({})


# MemoryIndex first: the other bases declare its methods as stubs, which it must override.
class MemoryStorage(MemoryIndex, MemoryLimits, MemorySchedules, MemoryObserve, MemoryControl):
    """Jobs in a dict, guarded by one lock. ``MemoryStorage("memory://")`` works too."""

    capabilities = (
        frozenset({WAKEUP, COMPLETE_MANY, SCHEDULES, NODES, HISTORY, CANCEL, SNOOZE, LIMITS, PAUSE})
        | {JOB_SCAN, FINISH_AND_CLAIM}
        | PROTOCOL_2
    )

    def __init__(self, url: str | None = None) -> None:
        super().__init__()  # MemoryIndex: the claim heaps
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._jobs: dict[str, JobRecord] = {}
        self._unique = UniqueIndex()
        self._seq = 0
        self._signal = 0
        self._waiters = 0
        # Per thread, the signal its previous wait ended at: a transition made
        # between two waits of a thread must count for its next wait.
        self._seen = threading.local()

    # -- enqueue and uniqueness ------------------------------------------------------

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        with self._lock:
            stored = self._jobs
            if len(jobs) == 1:  # a single enqueue: the producers' hot path
                if jobs[0].id in stored:
                    raise ValueError("duplicate job id in enqueue batch")
            elif len({job.id for job in jobs}) != len(jobs) or any(j.id in stored for j in jobs):
                raise ValueError("duplicate job id in enqueue batch")
            holders: list[str] = []
            for job in jobs:
                # A job stored dead (its partition could not be computed) holds no key.
                dead = job.dead_error is not None
                unique = None if dead else job.unique
                if unique is not None:
                    holder = self._unique.holder(job, stored)
                    if holder is not None:
                        holders.append(holder)
                        continue
                holders.append(job.id)
                self._seq += 1
                seq = self._seq
                worker, job_id = job.worker, job.id
                order = self._order.get(worker)
                if order is None:
                    order = self._order[worker] = []
                heapq.heappush(order, (seq, job_id))
                ids = self._ids.get(worker)
                if ids is None:
                    ids = self._ids[worker] = set()
                ids.add(job_id)
                key = None
                if unique is not None:
                    key = unique.key
                    self._unique.add(worker, key, job_id, unique.period)
                # Positional: keyword arguments cost a fifth of an enqueue here.
                record = JobRecord(
                    job_id,
                    seq,
                    worker,
                    job.payload,
                    DEAD if dead else WAITING,
                    0,
                    job.max_attempts,
                    job.run_at,
                    job.enqueued_at,
                    (clip_error(job.dead_error),) if job.dead_error is not None else (),
                    None,
                    None,
                    None,
                    None,
                    0,
                    job.priority,
                    dict(job.meta) if job.meta else _NO_META,
                    job.timeout,
                    job.expires_at,
                    key,
                    job.partition,
                )
                if not dead and job.expires_at is None and job.run_at <= job.enqueued_at:
                    # Due now and never expiring (most jobs): what _store does, inline.
                    stored[job_id] = record
                    heap = self._ready.get(worker)
                    if heap is None:
                        heap = self._ready[worker] = []
                    heapq.heappush(heap, (job.priority, job.run_at, seq, job_id))
                    if len(heap) > 2 * len(ids) + SLACK:
                        self._tidy(worker)
                else:
                    self._store(record, job.enqueued_at)
            if jobs:
                self._notify()
            return holders

    # -- outcomes --------------------------------------------------------------------

    def _held(self, job_id: str, token: str) -> JobRecord | None:
        job = self._jobs.get(job_id)
        if job is None or job.state != RUNNING or job.lease_token != token:
            return None
        return job

    def complete(self, job_id: str, token: str, *, now: float | None = None) -> bool:
        with self._lock:
            job = self._held(job_id, token)
            if job is None:
                return False
            if job.unique_key is not None or self._unique.marker_heap:
                self._unique.completed(job, now)
            self._remove(job)
            return True

    def complete_many(
        self, items: Sequence[tuple[str, str]], *, now: float | None = None
    ) -> list[str]:
        with self._lock:
            done = []
            for job_id, token in items:
                job = self._held(job_id, token)
                if job is not None:
                    if job.unique_key is not None or self._unique.marker_heap:
                        self._unique.completed(job, now)
                    self._remove(job)
                    done.append(job_id)
            return done

    def finish_and_claim(self, request: FinishAndClaim) -> Finished:
        """``complete_many`` then ``claim``: two steps under the lock, the claim second."""
        completed = self.complete_many(request.done, now=request.now) if request.done else []
        claimed = claim_requested(self, request)
        return Finished(completed, claimed)

    def schedule_retry(self, job_id: str, token: str, *, run_at: float, error: str) -> bool:
        with self._lock:
            job = self._held(job_id, token)
            if job is None:
                return False
            errors, count = add_error(job, error)
            self._store(
                _unleased(job, state=WAITING, run_at=run_at, errors=errors, error_count=count)
            )
            self._notify()
            return True

    def bury(self, job_id: str, token: str, *, error: str) -> bool:
        with self._lock:
            job = self._held(job_id, token)
            if job is None:
                return False
            errors, count = add_error(job, error)
            self._jobs[job_id] = _unleased(job, state=DEAD, errors=errors, error_count=count)
            return True

    def release(self, job_id: str, token: str) -> bool:
        with self._lock:
            job = self._held(job_id, token)
            if job is None:
                return False
            self._store(_unleased(job, state=WAITING, attempt=job.attempt - 1))
            self._notify()
            return True

    def extend(self, token: str, job_ids: Sequence[str], lease_until: float) -> list[str]:
        with self._lock:
            extended = []
            for job_id in job_ids:
                job = self._held(job_id, token)
                if job is not None:
                    self._jobs[job_id] = replace(job, lease_expires=lease_until)
                    extended.append(job_id)
            return extended

    def recover(self, now: float, *, owner: str | None = None, error: str) -> Recovered:
        with self._lock:
            waiting: list[str] = []
            dead: list[str] = []
            for job in sorted(self._jobs.values(), key=lambda job: job.seq):
                if job.state != RUNNING:
                    continue
                expired = job.lease_expires is not None and job.lease_expires <= now
                if not expired and (owner is None or job.lease_owner != owner):
                    continue
                errors, count = add_error(job, error)
                if job.attempt < job.max_attempts:
                    self._store(
                        _unleased(job, state=WAITING, run_at=now, errors=errors, error_count=count),
                        now,
                    )
                    waiting.append(job.id)
                else:
                    self._jobs[job.id] = _unleased(
                        job, state=DEAD, errors=errors, error_count=count
                    )
                    dead.append(job.id)
            if waiting:
                self._notify()
            return Recovered(waiting=tuple(waiting), dead=tuple(dead))

    def expire(self, now: float, *, limit: int = 1000) -> list[str]:
        if limit <= 0:
            return []
        with self._lock:
            heap = self._expiry
            due: dict[str, tuple[float, int, str]] = {}
            while heap and heap[0][0] <= now:
                entry = heapq.heappop(heap)
                job = self._jobs.get(entry[2])
                if job is not None and job.state == WAITING and job.expires_at == entry[0]:
                    due.setdefault(job.id, entry)
            # The oldest seq go first; the rest wait for the next call.
            ordered = sorted(due.values(), key=lambda entry: entry[1])
            for entry in ordered[limit:]:
                heapq.heappush(heap, entry)
            expired = []
            for _, _, job_id in ordered[:limit]:
                job = self._jobs[job_id]
                errors, count = add_error(job, EXPIRED)
                self._jobs[job_id] = replace(job, state=DEAD, errors=errors, error_count=count)
                expired.append(job_id)
            return expired

    # -- reading and management ------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._jobs.get(job_id)

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        worker: str | None = None,
        limit: int = 100,
        after_seq: int | None = None,
        tag: tuple[str, str] | None = None,
    ) -> list[JobRecord]:
        with self._lock:
            found = [
                job
                for job in self._jobs.values()
                if (state is None or job.state == state)
                and (worker is None or job.worker == worker)
                and (after_seq is None or job.seq > after_seq)
                and (tag is None or job.meta.get(tag[0]) == tag[1])
            ]
        found.sort(key=lambda job: job.seq)
        return found[: max(limit, 0)]

    def scan_jobs(self, scan: JobScan) -> ScannedJobs:
        with self._lock:
            candidates = sorted(
                (
                    job
                    for job in self._jobs.values()
                    if (scan.state is None or job.state == scan.state)
                    and (scan.worker is None or job.worker == scan.worker)
                    and (scan.after_seq is None or job.seq > scan.after_seq)
                ),
                key=lambda job: job.seq,
            )
        read = candidates[: scan.budget]
        bound = read[-1].seq if len(candidates) > scan.budget else None
        tag = scan.tag
        found = [job for job in read if tag is None or job.meta.get(tag[0]) == tag[1]]
        return finish_scan(found, scan.limit, bound)

    def delete(self, job_id: str) -> DeleteResult:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return "missing"
            if job.state == RUNNING:
                return "running"
            self._remove(job)
            return "deleted"

    def requeue(self, job_id: str, new_id: str, *, now: float) -> RequeueResult:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return "missing"
            if job.state != DEAD:
                return "not_dead"
            if new_id in self._jobs:
                raise ValueError(f"job id {new_id!r} already exists")
            period = self._unique.period(job_id)
            self._remove(job)
            self._ids.setdefault(job.worker, set()).add(new_id)
            heapq.heappush(self._order.setdefault(job.worker, []), (job.seq, new_id))
            if job.unique_key is not None:
                self._unique.add(job.worker, job.unique_key, new_id, period)
            self._store(
                replace(
                    job,
                    id=new_id,
                    state=WAITING,
                    attempt=0,
                    run_at=now,
                    errors=(),
                    error_count=0,
                    expires_at=None,
                ),
                now,
            )
            self._notify()
            return "requeued"

    def counts(self, now: float) -> dict[str, Counts]:
        tally: dict[str, list[int]] = {}
        with self._lock:
            for job in self._jobs.values():
                row = tally.setdefault(job.worker, [0, 0, 0, 0])
                if job.state == WAITING:
                    row[0 if job.run_at <= now else 1] += 1
                elif job.state == RUNNING:
                    row[2] += 1
                else:
                    row[3] += 1
        return {worker: Counts(*row) for worker, row in tally.items()}

    def close(self) -> None:
        with self._lock:
            self._notify()

    def wait_for_jobs(self, timeout: float) -> bool:
        with self._lock:
            seen: int = getattr(self._seen, "signal", self._signal)
            self._waiters += 1
            try:
                self._wakeup.wait_for(lambda: self._signal != seen, timeout)
            finally:
                self._waiters -= 1
            self._seen.signal = self._signal
            return self._signal != seen

    def _notify(self) -> None:
        # Called with the lock held. notify_all is slow Python code: skip it when
        # nobody waits, as when jobs are enqueued with no worker running.
        self._signal += 1
        if self._waiters:
            self._wakeup.notify_all()


def _unleased(job: JobRecord, **changes: object) -> JobRecord:
    return replace(
        job,
        lease_owner=None,
        lease_token=None,
        lease_expires=None,
        started_at=None,
        **changes,  # type: ignore[arg-type]
    )
