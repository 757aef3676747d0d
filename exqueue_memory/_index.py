"""MemoryStorage's index of waiting jobs, and the claims that read it.

Per worker, heaps index the jobs dict so a claim does not scan every job:
waiting jobs sit in a *scheduled* heap by ``(run_at, seq)`` until a claim's
``now`` reaches their ``run_at``, which promotes them into a *ready* heap by the
claim order ``(priority, run_at, seq)``; a third heap by ``seq`` finds the serial
head. A claim therefore costs the jobs it promotes and takes, not the jobs
waiting. Heap entries are never removed in place; an entry whose job changed is
skipped when it reaches the top, and a worker's heaps are rebuilt from its live
jobs once stale entries outnumber them, so memory follows the jobs stored now,
not every job ever enqueued. ``expire`` finds due jobs through one more heap, by
``expires_at``.

The caller holds the storage lock around every method but ``claim``, which
takes it.
"""

from __future__ import annotations

import heapq
import threading
from typing import Any

from exqueue.storage import RUNNING, WAITING, JobRecord
from exqueue_memory._unique import UniqueIndex

#: Stale heap entries a worker may carry beyond as many as it has live jobs.
SLACK = 64


class MemoryIndex:
    """The claim index and ``claim``; the first base class of ``MemoryStorage``."""

    _lock: threading.Lock
    _jobs: dict[str, JobRecord]
    _unique: UniqueIndex
    _paused_types: frozenset[str]

    def __init__(self) -> None:
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
        # worker -> ids of jobs leased since their worker's last limited claim (see _lease)
        self._leased: dict[str, set[str]] = {}
        # The latest claim ``now``: a job stored with an earlier run_at goes
        # straight to the ready heap (a claim demotes it if its now is earlier).
        self._now_seen = float("-inf")

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
            if len(heap) > 2 * len(self._ids[worker]) + SLACK:
                self._tidy(worker)
            if len(self._expiry) > 2 * len(self._jobs) + SLACK:
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
        elif len(self._order[job.worker]) > 2 * len(ids) + SLACK:
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


def _runnable(job: JobRecord, now: float) -> bool:
    """Waiting, due, and not expired."""
    return (
        job.state == WAITING
        and job.run_at <= now
        and (job.expires_at is None or job.expires_at > now)
    )
