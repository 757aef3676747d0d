"""An executable reference model of the job state machine, in plain dicts and lists.

This is what the conformance suite compares a real backend against. It is written
from the contract (the docstrings of :class:`exqueue.storage.Storage` and SPEC §2),
not from any backend, and is deliberately naive: every operation scans every job.
It has no clock of its own; like a backend it is told ``now`` on each call.

Protocol 2: claims go by ``(priority, run_at, seq)`` and skip expired jobs (a
serial type still runs only its head, whatever its priority); :meth:`Model.expire`
buries expired waiting jobs; a unique key is held by a stored job of the same
worker in the states the new job names (``waiting`` always), or, when the new job
has a period, by a job completed at ``T`` until ``T`` plus the period that job
was enqueued with. Completion markers are kept forever here; a backend may drop
one once its period has passed (the suite's clock only moves forward).

Limits and pause (issue 15): a job keeps its ``partition``; a job enqueued with
a ``dead_error`` is stored dead with that one error and holds no unique key;
:meth:`Model.claim_limited` takes jobs in claim order while the bucket (the
worker, or one partition of it) has fewer running jobs than the concurrency
bound and fewer starts in ``(now - per, now]`` than the rate; starts are kept
forever (a backend may prune those older than its window). A paused worker type
is never claimed.

Sequence numbers here are the model's own counter. A backend's ``seq`` values are
not expected to equal them, only to sort the same way and never to change for a job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from exqueue.storage import (
    DEAD,
    ERRORS_KEPT,
    EXPIRED,
    RUNNING,
    WAITING,
    Counts,
    JobState,
    Limits,
    NewJob,
    clip_error,
)


@dataclass
class ModelJob:
    """One stored job as the model sees it (mutable: transitions edit it in place)."""

    id: str
    seq: int
    worker: str
    payload: bytes
    state: JobState
    attempt: int
    max_attempts: int
    run_at: float
    enqueued_at: float
    errors: list[str] = field(default_factory=list)
    lease_owner: str | None = None
    lease_token: str | None = None
    lease_expires: float | None = None
    error_count: int = 0
    # -- protocol 2
    priority: int = 0
    meta: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    expires_at: float | None = None
    unique_key: str | None = None
    #: The unique period it was enqueued with (not observable; kept by requeue).
    unique_period: float | None = None
    # -- limits
    partition: str | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def add_error(self, error: str) -> None:
        """Count ``error``; keep the first error and the last ``ERRORS_KEPT``."""
        self.error_count += 1
        self.errors.append(error)
        if len(self.errors) > ERRORS_KEPT + 1:
            del self.errors[1]

    def clear_lease(self) -> None:
        self.lease_owner = None
        self.lease_token = None
        self.lease_expires = None


class Model:
    """The expected store: ``jobs`` by id, and the next sequence number."""

    def __init__(self) -> None:
        self.jobs: dict[str, ModelJob] = {}
        self.next_seq = 0
        # (worker, key) -> (held until, completed job's id, its seq) per completion
        self.markers: dict[tuple[str, str], list[tuple[float, str, int]]] = {}
        #: Paused worker types.
        self.paused: set[str] = set()
        #: (worker, bucket key) -> the time of every limited claim (start) of that bucket.
        self.starts: dict[tuple[str, str | None], list[float]] = {}

    # -- helpers ----------------------------------------------------------------------

    def ordered(self) -> list[ModelJob]:
        """Every job in ``seq`` order (the order ``list_jobs`` must use)."""
        return sorted(self.jobs.values(), key=lambda job: job.seq)

    def held(self, job_id: str, token: str) -> ModelJob | None:
        job = self.jobs.get(job_id)
        if job is None or job.state != RUNNING or job.lease_token != token:
            return None
        return job

    # -- transitions ------------------------------------------------------------------

    def enqueue(self, batch: Sequence[NewJob]) -> list[frozenset[str]] | None:
        """Apply a batch; None (nothing applied) when any id is a duplicate.

        Else, per job, the ids ``enqueue`` may return for it: its own when it is
        stored, else every job holding its unique key (the contract does not say
        which of several holders is named).
        """
        ids = [job.id for job in batch]
        if len(set(ids)) != len(ids) or any(job_id in self.jobs for job_id in ids):
            return None
        answers: list[frozenset[str]] = []
        for new in batch:
            dead = new.dead_error is not None
            keyed = new.unique is not None and not dead
            holders = self.holders(new) if keyed else frozenset()
            if holders:
                answers.append(holders)
                continue
            answers.append(frozenset({new.id}))
            self.next_seq += 1
            self.jobs[new.id] = ModelJob(
                id=new.id,
                seq=self.next_seq,
                worker=new.worker,
                payload=new.payload,
                state=DEAD if dead else WAITING,
                attempt=0,
                max_attempts=new.max_attempts,
                run_at=new.run_at,
                enqueued_at=new.enqueued_at,
                priority=new.priority,
                meta=dict(new.meta),
                timeout=new.timeout,
                expires_at=new.expires_at,
                unique_key=new.unique.key if keyed and new.unique is not None else None,
                unique_period=new.unique.period if keyed and new.unique is not None else None,
                partition=new.partition,
            )
            if new.dead_error is not None:
                self.jobs[new.id].add_error(clip_error(new.dead_error))
        return answers

    def holders(self, new: NewJob) -> frozenset[str]:
        """The ids of every job holding ``new``'s unique key (empty: the key is free)."""
        assert new.unique is not None
        states = new.unique.states | {WAITING}
        found = {
            job.id
            for job in self.jobs.values()
            if job.worker == new.worker and job.unique_key == new.unique.key and job.state in states
        }
        if new.unique.period is not None:
            found.update(
                job_id
                for until, job_id, _ in self.markers.get((new.worker, new.unique.key), [])
                if until > new.enqueued_at
            )
        return frozenset(found)

    def claim(
        self,
        worker: str,
        limit: int,
        *,
        now: float,
        owner: str,
        token: str,
        lease_until: float,
        serial: bool,
    ) -> list[str]:
        """The ids claimed, in claim order."""
        if limit <= 0 or worker in self.paused:
            return []
        of_worker = [job for job in self.ordered() if job.worker == worker]
        if serial:
            # Only the head (lowest seq in any state) may ever run.
            candidates = of_worker[:1]
            limit = 1
        else:
            candidates = of_worker
        runnable = [
            job
            for job in candidates
            if job.state == WAITING and job.run_at <= now and not job.expired(now)
        ]
        runnable.sort(key=lambda job: (job.priority, job.run_at, job.seq))
        taken = runnable[:limit]
        for job in taken:
            job.state = RUNNING
            job.attempt += 1
            job.lease_owner = owner
            job.lease_token = token
            job.lease_expires = lease_until
        return [job.id for job in taken]

    def claim_limited(
        self,
        worker: str,
        limit: int,
        *,
        now: float,
        owner: str,
        token: str,
        lease_until: float,
        limits: Limits,
    ) -> list[str]:
        """The ids a limited claim takes, in claim order (see the module docstring)."""
        if limit <= 0 or worker in self.paused:
            return []

        def bucket(job: ModelJob) -> str | None:
            return job.partition if limits.partitioned else None

        runnable = [
            job
            for job in self.ordered()
            if job.worker == worker
            and job.state == WAITING
            and job.run_at <= now
            and not job.expired(now)
        ]
        runnable.sort(key=lambda job: (job.priority, job.run_at, job.seq))
        taken: list[ModelJob] = []
        for job in runnable:
            if len(taken) == limit:
                break
            key = bucket(job)
            if limits.concurrency is not None:
                running = sum(
                    1
                    for other in self.jobs.values()
                    if other.worker == worker and other.state == RUNNING and bucket(other) == key
                )
                if running >= limits.concurrency:
                    continue
            starts = self.starts.setdefault((worker, key), [])
            if limits.rate is not None and limits.per is not None:
                recent = sum(1 for start in starts if now - limits.per < start <= now)
                if recent >= limits.rate:
                    continue
                starts.append(now)
            job.state = RUNNING
            job.attempt += 1
            job.lease_owner = owner
            job.lease_token = token
            job.lease_expires = lease_until
            taken.append(job)
        return [job.id for job in taken]

    def complete(self, job_id: str, token: str, *, now: float | None = None) -> bool:
        job = self.held(job_id, token)
        if job is None:
            return False
        if now is not None and job.unique_key is not None and job.unique_period is not None:
            marker = (now + job.unique_period, job.id, job.seq)
            self.markers.setdefault((job.worker, job.unique_key), []).append(marker)
        del self.jobs[job_id]
        return True

    def finish_and_claim(
        self,
        done: Sequence[tuple[str, str]],
        worker: str,
        limit: int,
        *,
        now: float,
        owner: str,
        token: str,
        lease_until: float,
        serial: bool,
    ) -> tuple[list[str], list[str]]:
        """FINISH_AND_CLAIM: the successes of ``done`` first, then the claim (their ids)."""
        completed = [job_id for job_id, held in done if self.complete(job_id, held, now=now)]
        claimed = self.claim(
            worker, limit, now=now, owner=owner, token=token, lease_until=lease_until, serial=serial
        )
        return completed, claimed

    def expire(self, now: float, *, limit: int) -> list[str]:
        """Bury up to ``limit`` expired waiting jobs, oldest seq first; their ids."""
        due = [job for job in self.ordered() if job.state == WAITING and job.expired(now)]
        for job in due[: max(limit, 0)]:
            job.state = DEAD
            job.add_error(EXPIRED)
        return [job.id for job in due[: max(limit, 0)]]

    def schedule_retry(self, job_id: str, token: str, *, run_at: float, error: str) -> bool:
        job = self.held(job_id, token)
        if job is None:
            return False
        job.state = WAITING
        job.run_at = run_at
        job.add_error(error)
        job.clear_lease()
        return True

    def bury(self, job_id: str, token: str, *, error: str) -> bool:
        job = self.held(job_id, token)
        if job is None:
            return False
        job.state = DEAD
        job.add_error(error)
        job.clear_lease()
        return True

    def release(self, job_id: str, token: str) -> bool:
        job = self.held(job_id, token)
        if job is None:
            return False
        job.state = WAITING
        job.attempt -= 1
        job.clear_lease()
        return True

    def extend(self, token: str, job_ids: Sequence[str], lease_until: float) -> list[str]:
        extended = []
        for job_id in job_ids:
            job = self.held(job_id, token)
            if job is not None:
                job.lease_expires = lease_until
                extended.append(job_id)
        return extended

    def recover(self, now: float, *, owner: str | None, error: str) -> tuple[list[str], list[str]]:
        """(ids sent back to waiting, ids that died)."""
        back: list[str] = []
        died: list[str] = []
        for job in self.ordered():
            if job.state != RUNNING:
                continue
            expired = job.lease_expires is not None and job.lease_expires <= now
            mine = owner is not None and job.lease_owner == owner
            if not (expired or mine):
                continue
            job.add_error(error)
            job.clear_lease()
            if job.attempt < job.max_attempts:
                job.state = WAITING
                job.run_at = now
                back.append(job.id)
            else:
                job.state = DEAD
                died.append(job.id)
        return back, died

    def delete(self, job_id: str) -> str:
        job = self.jobs.get(job_id)
        if job is None:
            return "missing"
        if job.state == RUNNING:
            return "running"
        del self.jobs[job_id]
        return "deleted"

    def requeue(self, job_id: str, new_id: str, *, now: float) -> str:
        job = self.jobs.get(job_id)
        if job is None:
            return "missing"
        if job.state != DEAD:
            return "not_dead"
        del self.jobs[job_id]
        job.id = new_id
        job.state = WAITING
        job.attempt = 0
        job.errors = []
        job.error_count = 0
        job.run_at = now
        job.expires_at = None
        self.jobs[new_id] = job
        return "requeued"

    # -- observations -----------------------------------------------------------------

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        worker: str | None = None,
        limit: int = 100,
        after_seq: int | None = None,
        tag: tuple[str, str] | None = None,
    ) -> list[str]:
        """Ids in seq order; ``after_seq`` is in the model's own numbering."""
        found = [
            job.id
            for job in self.ordered()
            if (state is None or job.state == state)
            and (worker is None or job.worker == worker)
            and (after_seq is None or job.seq > after_seq)
            and (tag is None or job.meta.get(tag[0]) == tag[1])
        ]
        return found[: max(limit, 0)]

    def counts(self, now: float) -> dict[str, Counts]:
        tally: dict[str, list[int]] = {}
        for job in self.jobs.values():
            row = tally.setdefault(job.worker, [0, 0, 0, 0])
            if job.state == WAITING:
                row[0 if job.run_at <= now else 1] += 1
            elif job.state == RUNNING:
                row[2] += 1
            else:
                row[3] += 1
        return {
            worker: Counts(waiting=w, scheduled=s, running=r, dead=d)
            for worker, (w, s, r, d) in tally.items()
        }
