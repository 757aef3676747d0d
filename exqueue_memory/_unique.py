"""MemoryStorage's unique-key index: who holds a key, and completion markers.

A key is held by a stored job of the same worker with that ``unique_key`` in one
of the states the new job names (``waiting`` always), or by a job completed with
a unique ``period`` until ``completed_at + period`` (a *marker*). The caller
holds the storage lock around every method.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

from exqueue.storage import WAITING, JobRecord, NewJob

_Key = tuple[str, str]  # (worker, unique key)


class _Marker:
    """A completed job that still holds its unique key until ``until``."""

    __slots__ = ("job_id", "seq", "until")

    def __init__(self, job_id: str, seq: int, until: float) -> None:
        self.job_id = job_id
        self.seq = seq
        self.until = until


class UniqueIndex:
    """Stored jobs by ``(worker, key)``, their periods, and completion markers."""

    def __init__(self) -> None:
        self._keyed: dict[_Key, set[str]] = {}
        # id -> the unique period the job was enqueued with (only jobs with one)
        self._periods: dict[str, float] = {}
        self._markers: dict[_Key, list[_Marker]] = {}
        # (until, key): when a key's markers may have run out; the store reads it
        # to skip completed() for a job without a key while none is held.
        self.marker_heap: list[tuple[float, _Key]] = []

    def holder(self, job: NewJob, jobs: Mapping[str, JobRecord]) -> str | None:
        """The id holding ``job``'s unique key, or None when the key is free."""
        assert job.unique is not None
        key = (job.worker, job.unique.key)
        states = job.unique.states | {WAITING}
        held = [jobs[i] for i in self._keyed.get(key, ()) if jobs[i].state in states]
        if held:
            return min(held, key=lambda record: record.seq).id
        if job.unique.period is not None:
            markers = [m for m in self._markers.get(key, ()) if m.until > job.enqueued_at]
            if markers:
                return min(markers, key=lambda m: m.seq).job_id
        return None

    def add(self, worker: str, key: str, job_id: str, period: float | None) -> None:
        """Index a stored job with a unique key (and the period it holds it for)."""
        self._keyed.setdefault((worker, key), set()).add(job_id)
        if period is not None:
            self._periods[job_id] = period

    def period(self, job_id: str) -> float | None:
        return self._periods.get(job_id)

    def discard(self, job: JobRecord) -> None:
        """Forget a job leaving the store."""
        self._periods.pop(job.id, None)
        if job.unique_key is not None:
            key = (job.worker, job.unique_key)
            keyed = self._keyed[key]
            keyed.discard(job.id)
            if not keyed:
                del self._keyed[key]

    def completed(self, job: JobRecord, now: float | None) -> None:
        """Leave a marker for a job completed at ``now`` with a period (call before discard)."""
        if now is None:
            return
        self._drop_markers(now)
        period = self._periods.get(job.id)
        if period is not None and job.unique_key is not None:
            key = (job.worker, job.unique_key)
            self._markers.setdefault(key, []).append(_Marker(job.id, job.seq, now + period))
            heapq.heappush(self.marker_heap, (now + period, key))

    def _drop_markers(self, now: float) -> None:
        """Forget completion markers whose period has passed by ``now``."""
        heap = self.marker_heap
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            markers = self._markers.get(key)
            if markers is not None:
                markers[:] = [m for m in markers if m.until > now]
                if not markers:
                    del self._markers[key]
