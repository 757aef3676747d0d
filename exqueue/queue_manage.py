"""Inspecting and managing stored jobs: ``queue.jobs``, ``get``, ``retry``,
``retry_dead``, ``delete``, ``cancel`` and ``stats``.

:class:`ManageMethods` is a base class of :class:`exqueue.Queue`; these calls
read the store or apply one transition each (the runtime, when started, is
woken or told of a cancel so it need not wait for its next poll).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exqueue.codec import Codec
from exqueue.errors import ConfigurationError, JobNotDeadError, JobNotFoundError, JobRunningError
from exqueue.job import Job
from exqueue.storage import (
    CANCEL,
    DEAD,
    METADATA,
    STATES,
    CancelRequest,
    CancelResult,
    JobState,
    Storage,
    SupportsCancel,
)

if TYPE_CHECKING:
    from exqueue.runtime import Runtime
    from exqueue.worker_type import WorkerType


@dataclass(frozen=True)
class WorkerStats:
    """Counts for one worker type. ``registered`` is False when this queue has no
    worker for jobs of that name (they wait, untouched, until one is registered)."""

    waiting: int
    scheduled: int
    running: int
    dead: int
    registered: bool
    #: No node claims its jobs until it is resumed (``queue.pause``).
    paused: bool = False


def new_job_id() -> str:
    """A random 128-bit id as 32 hex digits (like ``uuid4().hex``, cheaper to make)."""
    return os.urandom(16).hex()


class ManageMethods:
    """The job reads and management calls of :class:`exqueue.Queue` (a base class of it)."""

    storage: Storage
    clock: Callable[[], float]
    codec: Codec
    workers: dict[str, WorkerType[Any, Any]]
    _runtime: Runtime | None

    if TYPE_CHECKING:

        def paused(self) -> frozenset[str]: ...  # from LimitMethods

    def jobs(
        self,
        state: JobState | None = None,
        worker: str | None = None,
        limit: int = 100,
        *,
        tag: tuple[str, str] | None = None,
        after_seq: int | None = None,
    ) -> list[Job]:
        """Stored jobs, oldest first, filtered by state, worker name and a meta entry.

        ``tag=(key, value)`` keeps jobs whose ``meta[key] == value``; ``after_seq``
        keeps jobs stored after that one (a cursor, as ``exqueue jobs --after-seq``).
        """
        if state is not None and state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, not {state!r}")
        if after_seq is not None and (
            isinstance(after_seq, bool) or not isinstance(after_seq, int)
        ):
            raise ValueError(f"after_seq must be an int or None, not {after_seq!r}")
        if tag is None:
            records = self.storage.list_jobs(
                state=state, worker=worker, limit=limit, after_seq=after_seq
            )
        else:
            if (
                not isinstance(tag, tuple)
                or len(tag) != 2
                or not all(isinstance(part, str) for part in tag)
            ):
                raise ValueError(f"tag must be a (key, value) pair of strings, not {tag!r}")
            if METADATA not in self.storage.capabilities:
                raise ConfigurationError(
                    f"filtering by tag needs the storage capability {METADATA!r}, which "
                    f"{type(self.storage).__name__} does not declare"
                )
            records = self.storage.list_jobs(
                state=state, worker=worker, limit=limit, tag=tag, after_seq=after_seq
            )
        return [Job.from_record(record, self.codec) for record in records]

    def get(self, job_id: str) -> Job | None:
        record = self.storage.get(job_id)
        return Job.from_record(record, self.codec) if record is not None else None

    def retry(self, job_id: str) -> str:
        """Re-queue a dead job as a new job (attempt 0); returns the new id.

        A serial job keeps its place in line.
        """
        new_id = new_job_id()
        outcome = self.storage.requeue(job_id, new_id, now=self.clock())
        if outcome == "missing":
            raise JobNotFoundError(f"no job with id {job_id!r}")
        if outcome == "not_dead":
            raise JobNotDeadError(f"job {job_id!r} is not dead; only dead jobs can be retried")
        if self._runtime is not None:
            self._runtime.wake()
        return new_id

    def retry_dead(self, worker: str | None = None) -> list[str]:
        """Re-queue every dead job (of one worker type); returns the new ids."""
        new_ids: list[str] = []
        after_seq: int | None = None
        # Page by seq (a retried job keeps its seq) so that a job which dies
        # again while we work is not retried twice in one call.
        while batch := self.storage.list_jobs(
            state=DEAD, worker=worker, limit=500, after_seq=after_seq
        ):
            for record in batch:
                try:
                    new_ids.append(self.retry(record.id))
                except (JobNotFoundError, JobNotDeadError):
                    continue  # someone else acted on it meanwhile
            after_seq = batch[-1].seq
        return new_ids

    def delete(self, job_id: str) -> bool:
        """Remove a waiting or dead job. False when there is no such job.

        Raises :class:`JobRunningError` for a running job.
        """
        outcome = self.storage.delete(job_id)
        if outcome == "running":
            raise JobRunningError(
                f"job {job_id!r} is running; wait for it to finish (or its lease to expire)"
            )
        return outcome == "deleted"

    def cancel(self, job_id: str, *, delete: bool = False) -> CancelResult:
        """Cancel a job: a waiting one at once, a running one through its lease.

        A waiting job becomes dead with the error "cancelled" (``"cancelled"``),
        or is removed with ``delete=True`` (``"deleted"``). A running job is
        marked (``"requested"``): its worker sees the mark at its next heartbeat
        (a third of the lease) and stops it (its task is cancelled, or
        :class:`exqueue.JobCancelled` is raised in its thread), and it is kept
        dead as "cancelled". A dead job is left as it is (``"finished"``; with
        ``delete=True`` it is removed). Raises :class:`JobNotFoundError` when
        there is no such job.
        """
        storage = self.storage
        if CANCEL not in storage.capabilities or not isinstance(storage, SupportsCancel):
            raise ConfigurationError(f"{type(storage).__name__} cannot cancel jobs (no CANCEL)")
        outcome = storage.cancel(CancelRequest(job_id, delete=bool(delete)))
        if outcome == "missing":
            raise JobNotFoundError(f"no job with id {job_id!r}")
        if outcome == "requested" and self._runtime is not None:
            self._runtime.interrupt(job_id)  # held here: no need to wait for the heartbeat
        return outcome

    def stats(self) -> dict[str, WorkerStats]:
        """Per worker type: waiting (runnable now), scheduled, running, dead, and paused."""
        counts = self.storage.counts(self.clock())
        paused = self.paused()
        names = sorted(set(counts) | set(self.workers) | paused)
        result = {}
        for name in names:
            row = counts.get(name)
            result[name] = WorkerStats(
                waiting=row.waiting if row else 0,
                scheduled=row.scheduled if row else 0,
                running=row.running if row else 0,
                dead=row.dead if row else 0,
                registered=name in self.workers,
                paused=name in paused,
            )
        return result
