"""MemoryStorage: an in-process, thread-safe backend; the reference for tests.

Everything lives in one dict guarded by one lock, so each transition is atomic.
Per worker, heaps index the dict so a claim does not scan every job: waiting
jobs sit in a *scheduled* heap by ``(run_at, seq)`` until a claim's ``now``
reaches their ``run_at``, which promotes them into a *ready* heap by the claim
order ``(priority, run_at, seq)``; a third heap by ``seq`` finds the serial
head. A claim therefore costs the jobs it promotes and takes, not the jobs
waiting. Heap entries are never removed in place; an entry whose job changed is
skipped when it reaches the top, and a worker's heaps are rebuilt from its live
jobs once stale entries outnumber them, so memory follows the jobs stored now,
not every job ever enqueued. Nothing survives the process: use it for tests and
scripts.

Protocol 2 (every capability): unique keys are indexed per ``(worker, key)``;
a job completed with a unique ``period`` leaves a completion marker that holds
its key until ``completed_at + period``; ``expire`` finds due jobs through a
heap by ``expires_at``.

Limits and pause (``LIMITS``, ``PAUSE``): see :mod:`exqueue_memory._limits`.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any

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
from exqueue.storage_scan import JOB_SCAN, JobScan, ScannedJobs
from exqueue.storage_scan import finish as finish_scan
from exqueue_memory._control import MemoryControl
from exqueue_memory._limits import MemoryLimits
from exqueue_memory._observe import MemoryObserve
from exqueue_memory._schedules import MemorySchedules
from exqueue_memory._unique import UniqueIndex

__all__ = ["MemoryStorage"]

#: Stale heap entries a worker may carry beyond as many as it has live jobs.
_SLACK = 64
#: The meta of every job stored without any (read-only, so sharing it is safe).
_NO_META: Mapping[str, str] = MappingProxyType({})


class MemoryStorage(MemoryLimits, MemorySchedules, MemoryObserve, MemoryControl):
    """Jobs in a dict, guarded by one lock. ``MemoryStorage("memory://")`` works too."""

    capabilities = (
        frozenset({WAKEUP, COMPLETE_MANY, SCHEDULES, NODES, HISTORY, CANCEL, SNOOZE, LIMITS, PAUSE})
        | {JOB_SCAN}
        | PROTOCOL_2
    )

    def __init__(self, url: str | None = None) -> None:
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._jobs: dict[str, JobRecord] = {}
        # worker -> heap of (run_at, seq, id): waiting jobs not yet promoted
        self._scheduled: dict[str, list[tuple[float, int, str]]] = {}
        # worker -> heap of (priority, run_at, seq, id): promoted waiting jobs
        self._ready: dict[str, list[tuple[int, float, int, str]]] = {}
        # worker -> heap of (-expires_at, seq, id): ready jobs a claim found expired,
        # kept aside so a later claim with an earlier ``now`` can still find them
        self._lapsed: dict[str, list[tuple[float, int, str]]] = {}
        # worker -> heap of (seq, id) of every job (stale entries skipped)
        self._order: dict[str, list[tuple[int, str]]] = {}
        # worker -> ids of its stored jobs: the size the heaps are kept near
        self._ids: dict[str, set[str]] = {}
        # heap of (expires_at, seq, id) of waiting jobs with an expiry (stale skipped)
        self._expiry: list[tuple[float, int, str]] = []
        self._unique = UniqueIndex()
        # worker -> ids of jobs leased since their worker's last limited claim (see _lease)
        self._leased: dict[str, set[str]] = {}
        # The latest claim ``now``: a job stored with an earlier run_at goes
        # straight to the ready heap (a claim demotes it if its now is earlier).
        self._now_seen = float("-inf")
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
                    if len(heap) > 2 * len(ids) + _SLACK:
                        self._tidy(worker)
                else:
                    self._store(record, job.enqueued_at)
            if jobs:
                self._notify()
            return holders

    # -- claims ----------------------------------------------------------------------

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
        if limit <= 0:
            return []
        with self._lock:
            if self._paused_types and worker in self._paused_types:
                return []
            claimed = []
            if serial:
                head = self._head(worker)
                runnable = [head] if head is not None and _runnable(head, now) else []
            else:
                runnable = self._pop_runnable(worker, limit, now)
            for job in runnable:
                claimed.append(self._lease(job, now, owner, token, lease_until))
            return claimed

    def _lease(
        self, job: JobRecord, now: float, owner: str, token: str, lease_until: float
    ) -> JobRecord:
        """Store ``job`` claimed (lock held): running, ``attempt + 1``, under the lease."""
        # Built field by field: dataclasses.replace is the slowest part of a claim.
        updated = JobRecord(
            job.id,
            job.seq,
            job.worker,
            job.payload,
            RUNNING,
            job.attempt + 1,
            job.max_attempts,
            job.run_at,
            job.enqueued_at,
            job.errors,
            owner,
            token,
            lease_until,
            now,
            job.error_count,
            job.priority,
            job.meta,
            job.timeout,
            job.expires_at,
            job.unique_key,
            job.partition,
        )
        self._jobs[job.id] = updated
        # Every job that runs is noted here; limited claims count a worker's running
        # jobs from it, dropping those that have left ``running`` since.
        leased = self._leased.get(job.worker)
        if leased is None:
            leased = self._leased[job.worker] = set()
        leased.add(job.id)
        return updated

    def _store(self, job: JobRecord, now: float | None = None) -> None:
        """Save ``job`` (lock held), indexing it when it is waiting.

        A job due by ``now`` (the caller's clock: the enqueue's or the
        transition's) or by the latest claim goes straight to the ready heap, so
        a claim after a million enqueues does not promote a million entries; a
        claim with an earlier clock moves it back (see ``_pop_runnable``).
        """
        self._jobs[job.id] = job
        if job.state == WAITING:
            worker = job.worker
            due_by = self._now_seen if now is None or now < self._now_seen else now
            heap: list[Any]
            if job.run_at <= due_by:
                heap = self._ready.setdefault(worker, [])
                heapq.heappush(heap, (job.priority, job.run_at, job.seq, job.id))
            else:
                heap = self._scheduled.setdefault(worker, [])
                heapq.heappush(heap, (job.run_at, job.seq, job.id))
            if job.expires_at is not None:
                heapq.heappush(self._expiry, (job.expires_at, job.seq, job.id))
            # Only the heap just pushed grew; the lapsed heap is rebuilt with the others.
            if len(heap) > 2 * len(self._ids[worker]) + _SLACK:
                self._tidy(worker)
            if len(self._expiry) > 2 * len(self._jobs) + _SLACK:
                self._expiry = [
                    (j.expires_at, j.seq, j.id)
                    for j in self._jobs.values()
                    if j.state == WAITING and j.expires_at is not None
                ]
                heapq.heapify(self._expiry)

    def _remove(self, job: JobRecord) -> None:
        """Forget a stored job (lock held); a worker with no jobs left leaves no index."""
        del self._jobs[job.id]
        if job.unique_key is not None:  # only keyed jobs are in the unique index
            self._unique.discard(job)
        ids = self._ids[job.worker]
        ids.discard(job.id)
        leased = self._leased.get(job.worker)
        if leased:
            leased.discard(job.id)
        if not ids:
            del self._ids[job.worker]
            for index in (self._scheduled, self._ready, self._lapsed, self._order, self._leased):
                index.pop(job.worker, None)
        elif len(self._order[job.worker]) > 2 * len(ids) + _SLACK:
            self._tidy(job.worker)

    def _tidy(self, worker: str) -> None:
        """Rebuild ``worker``'s heaps from its live jobs, dropping stale entries.

        Called when stale entries outnumber live ones, so the cost is amortized
        over the transitions that made them stale.
        """
        jobs = [self._jobs[job_id] for job_id in self._ids[worker]]
        order = [(job.seq, job.id) for job in jobs]
        scheduled = [(job.run_at, job.seq, job.id) for job in jobs if job.state == WAITING]
        heapq.heapify(order)
        heapq.heapify(scheduled)
        self._order[worker] = order
        self._scheduled[worker] = scheduled
        self._ready[worker] = []
        self._lapsed[worker] = []

    def _pop_runnable(self, worker: str, limit: int, now: float) -> list[JobRecord]:
        jobs = self._jobs
        if now > self._now_seen:
            self._now_seen = now
        if worker not in self._ids:  # leave no index behind for a worker with no jobs
            return []
        scheduled = self._scheduled.setdefault(worker, [])
        ready = self._ready.setdefault(worker, [])
        lapsed = self._lapsed.get(worker)
        # A claim with an earlier now than one before (another node's clock) may
        # still run jobs an earlier claim found expired.
        while lapsed and -lapsed[0][0] > now:
            _, seq, job_id = heapq.heappop(lapsed)
            job = jobs.get(job_id)
            if job is not None and job.state == WAITING and job.seq == seq:
                heapq.heappush(scheduled, (job.run_at, seq, job_id))
        while scheduled and scheduled[0][0] <= now:
            run_at, seq, job_id = heapq.heappop(scheduled)
            job = jobs.get(job_id)
            if job is not None and job.state == WAITING and job.run_at == run_at:
                heapq.heappush(ready, (job.priority, run_at, seq, job_id))
        found: dict[str, JobRecord] = {}
        early: list[tuple[float, int, str]] = []
        while ready and len(found) < limit:
            _, run_at, seq, job_id = heapq.heappop(ready)
            job = jobs.get(job_id)
            # A serial claim leaves its entry behind, so a job can be indexed twice.
            if job is None or job.state != WAITING or job.run_at != run_at or job_id in found:
                continue
            if run_at > now:  # promoted by a claim with a later now
                early.append((run_at, seq, job_id))
            elif job.expires_at is not None and job.expires_at <= now:
                heapq.heappush(self._lapsed.setdefault(worker, []), (-job.expires_at, seq, job_id))
            else:
                found[job_id] = job
        for entry in early:
            heapq.heappush(scheduled, entry)
        return list(found.values())

    def _head(self, worker: str) -> JobRecord | None:
        heap = self._order.get(worker, [])
        while heap:
            seq, job_id = heap[0]
            job = self._jobs.get(job_id)
            if job is not None and job.seq == seq:
                return job
            heapq.heappop(heap)
        return None

    def _held(self, job_id: str, token: str) -> JobRecord | None:
        job = self._jobs.get(job_id)
        if job is None or job.state != RUNNING or job.lease_token != token:
            return None
        return job

    # -- outcomes --------------------------------------------------------------------

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


def _runnable(job: JobRecord, now: float) -> bool:
    """Waiting, due, and not expired."""
    return (
        job.state == WAITING
        and job.run_at <= now
        and (job.expires_at is None or job.expires_at > now)
    )


def _unleased(job: JobRecord, **changes: object) -> JobRecord:
    return replace(
        job,
        lease_owner=None,
        lease_token=None,
        lease_expires=None,
        started_at=None,
        **changes,  # type: ignore[arg-type]
    )
