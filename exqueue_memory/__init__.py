"""MemoryStorage: an in-process, thread-safe backend; the reference for tests.

Everything lives in one dict guarded by one lock, so each transition is atomic.
Per worker, two heaps index the dict so a claim does not scan every job: runnable
order ``(run_at, seq)`` for waiting jobs, and ``seq`` for the serial head. Heap
entries are never removed in place; an entry whose job changed is skipped when
it reaches the top, and a worker's heaps are rebuilt from its live jobs once
stale entries outnumber them, so memory follows the jobs stored now, not every
job ever enqueued. Nothing survives the process: use it for tests and scripts.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Sequence
from dataclasses import replace

from exqueue.storage import (
    COMPLETE_MANY,
    DEAD,
    RUNNING,
    SCHEDULES,
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
)
from exqueue_memory._schedules import MemorySchedules

__all__ = ["MemoryStorage"]

#: Stale heap entries a worker may carry beyond as many as it has live jobs.
_SLACK = 64


class MemoryStorage(MemorySchedules):
    """Jobs in a dict, guarded by one lock. ``MemoryStorage("memory://")`` works too."""

    capabilities = frozenset({WAKEUP, COMPLETE_MANY, SCHEDULES})

    def __init__(self, url: str | None = None) -> None:
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._jobs: dict[str, JobRecord] = {}
        # worker -> heap of (run_at, seq, id) for waiting jobs (stale entries skipped)
        self._runnable: dict[str, list[tuple[float, int, str]]] = {}
        # worker -> heap of (seq, id) of every job (stale entries skipped)
        self._order: dict[str, list[tuple[int, str]]] = {}
        # worker -> ids of its stored jobs: the size the heaps are kept near
        self._ids: dict[str, set[str]] = {}
        self._seq = 0
        self._signal = 0
        self._waiters = 0
        # Per thread, the signal its previous wait ended at: a transition made
        # between two waits of a thread must count for its next wait.
        self._seen = threading.local()

    def enqueue(self, jobs: Sequence[NewJob]) -> None:
        with self._lock:
            stored = self._jobs
            if len({job.id for job in jobs}) != len(jobs) or any(j.id in stored for j in jobs):
                raise ValueError("duplicate job id in enqueue batch")
            for job in jobs:
                self._seq += 1
                seq = self._seq
                order = self._order.get(job.worker)
                if order is None:
                    order = self._order[job.worker] = []
                heapq.heappush(order, (seq, job.id))
                self._ids.setdefault(job.worker, set()).add(job.id)
                self._store(
                    JobRecord(
                        job.id,
                        seq,
                        job.worker,
                        job.payload,
                        WAITING,
                        0,
                        job.max_attempts,
                        job.run_at,
                        job.enqueued_at,
                    )
                )
            if jobs:
                self._notify()

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
            claimed = []
            if serial:
                head = self._head(worker)
                runnable = [head] if head and head.state == WAITING and head.run_at <= now else []
            else:
                runnable = self._pop_runnable(worker, limit, now)
            for job in runnable:
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
                )
                self._jobs[job.id] = updated
                claimed.append(updated)
            return claimed

    def _store(self, job: JobRecord) -> None:
        """Save ``job`` (lock held), indexing it when it is waiting."""
        self._jobs[job.id] = job
        if job.state == WAITING:
            heap = self._runnable.setdefault(job.worker, [])
            heapq.heappush(heap, (job.run_at, job.seq, job.id))
            if len(heap) > 2 * len(self._ids[job.worker]) + _SLACK:
                self._tidy(job.worker)

    def _remove(self, job: JobRecord) -> None:
        """Forget a stored job (lock held); a worker with no jobs left leaves no index."""
        del self._jobs[job.id]
        ids = self._ids[job.worker]
        ids.discard(job.id)
        if not ids:
            del self._ids[job.worker]
            self._runnable.pop(job.worker, None)
            self._order.pop(job.worker, None)
        elif len(self._order[job.worker]) > 2 * len(ids) + _SLACK:
            self._tidy(job.worker)

    def _tidy(self, worker: str) -> None:
        """Rebuild ``worker``'s heaps from its live jobs, dropping stale entries.

        Called when stale entries outnumber live ones, so the cost is amortized
        over the transitions that made them stale.
        """
        jobs = [self._jobs[job_id] for job_id in self._ids[worker]]
        order = [(job.seq, job.id) for job in jobs]
        runnable = [(job.run_at, job.seq, job.id) for job in jobs if job.state == WAITING]
        heapq.heapify(order)
        heapq.heapify(runnable)
        self._order[worker] = order
        self._runnable[worker] = runnable

    def _pop_runnable(self, worker: str, limit: int, now: float) -> list[JobRecord]:
        heap = self._runnable.get(worker, [])
        found: dict[str, JobRecord] = {}
        while heap and len(found) < limit and heap[0][0] <= now:
            run_at, seq, job_id = heapq.heappop(heap)
            job = self._jobs.get(job_id)
            # A serial claim leaves its entry behind, so a job can be indexed twice.
            if job and job.state == WAITING and job.run_at == run_at and job_id not in found:
                found[job_id] = job
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

    def complete(self, job_id: str, token: str) -> bool:
        with self._lock:
            job = self._held(job_id, token)
            if job is None:
                return False
            self._remove(job)
            return True

    def complete_many(self, items: Sequence[tuple[str, str]]) -> list[str]:
        with self._lock:
            done = []
            for job_id, token in items:
                job = self._held(job_id, token)
                if job is not None:
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
                        _unleased(job, state=WAITING, run_at=now, errors=errors, error_count=count)
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
    ) -> list[JobRecord]:
        with self._lock:
            found = [
                job
                for job in self._jobs.values()
                if (state is None or job.state == state)
                and (worker is None or job.worker == worker)
                and (after_seq is None or job.seq > after_seq)
            ]
        found.sort(key=lambda job: job.seq)
        return found[: max(limit, 0)]

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
            self._remove(job)
            self._ids.setdefault(job.worker, set()).add(new_id)
            heapq.heappush(self._order.setdefault(job.worker, []), (job.seq, new_id))
            self._store(
                replace(
                    job, id=new_id, state=WAITING, attempt=0, run_at=now, errors=(), error_count=0
                )
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
