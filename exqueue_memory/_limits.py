"""MemoryStorage's cluster-wide limits and pause (capabilities ``LIMITS`` and ``PAUSE``).

``claim_limited`` runs under the storage lock like every transition, so the
bound check and the claim are one step. The running count of a bucket (the
worker, or one of its partitions) is counted from the jobs stored as
``running``, never kept apart: every transition out of ``running`` (a
completion, a retry, a recovery...) frees the slot because the job is no longer
running, with nothing to forget. (The ids leased since are noted per worker so
that the count does not scan waiting jobs; an id whose job has left ``running``
is dropped when next counted.) The starts of the rate window are kept per
bucket as a list of claim times, pruned of those older than the window.
"""

from __future__ import annotations

import bisect
import heapq
import threading
from collections import Counter

from exqueue.storage import RUNNING, WAITING, JobRecord, LimitedClaim, Limits

_Bucket = tuple[str, str | None]  # (worker, partition or None)


class MemoryLimits:
    """Limited claims and paused worker types; a base class of ``MemoryStorage``."""

    _lock: threading.Lock
    _jobs: dict[str, JobRecord]
    _ids: dict[str, set[str]]
    _ready: dict[str, list[tuple[int, float, int, str]]]
    _scheduled: dict[str, list[tuple[float, int, str]]]
    _lapsed: dict[str, list[tuple[float, int, str]]]
    _leased: dict[str, set[str]]
    #: Replaced, never mutated, so ``claim`` reads it without a copy.
    _paused_types: frozenset[str] = frozenset()

    def _pop_runnable(self, worker: str, limit: int, now: float) -> list[JobRecord]:
        raise NotImplementedError

    def _lease(
        self, job: JobRecord, now: float, owner: str, token: str, lease_until: float
    ) -> JobRecord:
        raise NotImplementedError

    def _starts(self) -> dict[_Bucket, list[float]]:
        starts: dict[_Bucket, list[float]] = self.__dict__.setdefault("_limit_starts", {})
        return starts

    # -- pause -----------------------------------------------------------------------

    def pause(self, worker: str, paused: bool) -> None:
        with self._lock:
            if paused:
                self._paused_types = self._paused_types | {worker}
            else:
                self._paused_types = self._paused_types - {worker}

    def paused(self) -> frozenset[str]:
        with self._lock:
            return self._paused_types

    # -- limited claims --------------------------------------------------------------

    def claim_limited(self, request: LimitedClaim) -> list[JobRecord]:
        worker, now, limits = request.worker, request.now, request.limits
        if request.limit <= 0:
            return []
        with self._lock:
            if worker in self._paused_types:
                return []
            self._pop_runnable(worker, 0, now)  # promotes the due jobs to the ready heap
            ready = self._ready.get(worker)
            if not ready:
                return []
            running = self._running(worker, limits)
            starts = self._starts()
            jobs = self._jobs
            taken: list[JobRecord] = []
            taken_ids: set[str] = set()
            full: set[str | None] = set()
            aside: list[tuple[int, float, int, str]] = []
            early: list[tuple[float, int, str]] = []
            while ready and len(taken) < request.limit:
                entry = heapq.heappop(ready)
                _, run_at, seq, job_id = entry
                job = jobs.get(job_id)
                if job is None or job.state != WAITING or job.run_at != run_at:
                    continue
                if job_id in taken_ids:
                    continue
                if run_at > now:  # promoted by a claim with a later now
                    early.append((run_at, seq, job_id))
                    continue
                if job.expires_at is not None and job.expires_at <= now:
                    lapsed = self._lapsed.setdefault(worker, [])
                    heapq.heappush(lapsed, (-job.expires_at, seq, job_id))
                    continue
                key = job.partition if limits.partitioned else None
                if key in full:
                    aside.append(entry)
                    continue
                window = starts.setdefault((worker, key), [])
                if not _room(limits, running[key], window, now):
                    full.add(key)
                    aside.append(entry)
                    if not limits.partitioned:
                        break  # one bucket: nothing behind it may run either
                    continue
                running[key] += 1
                if limits.rate is not None:
                    bisect.insort(window, now)
                taken_ids.add(job_id)
                taken.append(
                    self._lease(job, now, request.owner, request.token, request.lease_until)
                )
            for entry in aside:
                heapq.heappush(ready, entry)
            if early:
                scheduled = self._scheduled.setdefault(worker, [])
                for back in early:
                    heapq.heappush(scheduled, back)
            return taken

    def _running(self, worker: str, limits: Limits) -> Counter[str | None]:
        """Running jobs of ``worker`` per bucket key (lock held)."""
        if limits.concurrency is None:
            return Counter()
        leased = self._leased.get(worker)
        if not leased:
            return Counter()
        jobs = self._jobs
        running: list[JobRecord] = []
        for job_id in list(leased):
            job = jobs.get(job_id)
            if job is None or job.state != RUNNING:
                leased.discard(job_id)  # it left running: its slot is free
            else:
                running.append(job)
        return Counter((job.partition if limits.partitioned else None) for job in running)


def _room(limits: Limits, running: int, window: list[float], now: float) -> bool:
    """Whether a bucket may start one more job at ``now`` (prunes its old starts)."""
    if limits.concurrency is not None and running >= limits.concurrency:
        return False
    if limits.rate is None or limits.per is None:
        return True
    # The window is kept sorted (nodes' clocks differ, so starts may come unordered).
    old = bisect.bisect_right(window, now - limits.per)
    if old:
        del window[:old]
    return bisect.bisect_right(window, now) < limits.rate
