"""MemoryStorage's cancellation and snooze (capabilities ``CANCEL`` and ``SNOOZE``).

A cancel mark is kept per attempt, as ``(job id, lease token)``: a mark dies
with the attempt it was made for, whatever ends it (a recovery, a retry), since
no later claim has that token. Snooze counts are kept per job id and dropped
with the job.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from exqueue.storage import (
    CANCELLED,
    DEAD,
    RUNNING,
    WAITING,
    CancelRequest,
    CancelResult,
    JobRecord,
    SnoozeRequest,
    SnoozeResult,
    add_error,
)

if TYPE_CHECKING:
    from collections.abc import Sequence


class MemoryControl:
    """The cancel and snooze calls of ``MemoryStorage`` (a base class of it)."""

    _lock: threading.Lock
    _jobs: dict[str, JobRecord]

    def _store(self, job: JobRecord, now: float | None = None) -> None:
        raise NotImplementedError

    def _remove(self, job: JobRecord) -> None:
        raise NotImplementedError

    def _notify(self) -> None:
        raise NotImplementedError

    def _marks(self) -> set[tuple[str, str]]:
        marks: set[tuple[str, str]] = self.__dict__.setdefault("_cancel_mark_set", set())
        return marks

    def _snooze_counts(self) -> dict[str, int]:
        counts: dict[str, int] = self.__dict__.setdefault("_snooze_count_of", {})
        return counts

    def cancel(self, request: CancelRequest) -> CancelResult:
        from exqueue_memory import _unleased

        with self._lock:
            job = self._jobs.get(request.job_id)
            if job is None:
                return "missing"
            if job.state == RUNNING:
                assert job.lease_token is not None
                self._marks().add((job.id, job.lease_token))
                return "requested"
            if request.delete:
                self._remove(job)
                self._snooze_counts().pop(job.id, None)
                return "deleted"
            if job.state == DEAD:
                return "finished"
            assert job.state == WAITING
            errors, count = add_error(job, CANCELLED)
            self._store(_unleased(job, state=DEAD, errors=errors, error_count=count))
            return "cancelled"

    def cancel_requested(self, token: str, job_ids: Sequence[str]) -> list[str]:
        with self._lock:
            marks = self._marks()
            found = []
            for job_id in job_ids:
                if (job_id, token) not in marks:
                    continue
                job = self._jobs.get(job_id)
                if job is not None and job.state == RUNNING and job.lease_token == token:
                    found.append(job_id)
                else:
                    marks.discard((job_id, token))  # the attempt is over
            return found

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
            self._store(
                _unleased(job, state=WAITING, attempt=job.attempt - 1, run_at=request.run_at)
            )
            self._notify()
            return "snoozed"

    def snoozes(self, job_id: str) -> int:
        with self._lock:
            counts = self._snooze_counts()
            if job_id not in self._jobs:
                counts.pop(job_id, None)
                return 0
            return counts.get(job_id, 0)
