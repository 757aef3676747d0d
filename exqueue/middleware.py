"""Middleware: hooks around enqueue, every job outcome and a worker process's life.

A :class:`Middleware` overrides the hooks it needs; every hook of the base
class does nothing. A queue calls its middlewares in the order they were
added (``Queue(middleware=[...])``, ``queue.add_middleware(m)``), each hook
on every middleware, whatever the others did.

A middleware can never lose or double-run a job: each call is guarded, an
exception is logged (logger ``exqueue``, with the job's id, worker type and
attempt in ``extra``) and the job goes on exactly as without it. The only
hook that changes anything is :meth:`Middleware.enqueue`, which may return a
changed :class:`~exqueue.NewJob` (tracing adds its context to ``meta``); one
that raises, or returns something else, leaves the job as it was.

Outcome hooks run on the job's thread right after the outcome is decided and
its transition recorded (a success may be queued for a batched write, see
:mod:`exqueue.runtime.acks`); ``dead`` also runs for jobs that died off a job
thread (lost workers, expiry) on the node that recorded it. ``cancelled``,
``timed_out`` and ``snoozed`` are part of the interface for runtimes that
cancel, time out and snooze jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from exqueue.storage import JobRecord, NewJob

if TYPE_CHECKING:
    from exqueue.job import Job

__all__ = ["Hooks", "Middleware", "job_extra"]

log = logging.getLogger("exqueue")


def job_extra(job: JobRecord | NewJob) -> dict[str, Any]:
    """The structured fields every log record about a job carries (``extra=``)."""
    return {
        "job_id": job.id,
        "worker": job.worker,
        "attempt": job.attempt if isinstance(job, JobRecord) else 0,
    }


class Middleware:
    """Hooks a queue calls; override those you need (see the module docstring).

    ``duration`` is the attempt's run time in seconds (a monotonic clock);
    ``job`` is the record as claimed (``attempt`` counts this attempt).
    """

    def enqueue(self, job: NewJob) -> NewJob:
        """Before ``job`` is stored: return it, or a changed copy (``dataclasses.replace``)."""
        return job

    def enqueued(self, job: NewJob, holder: str) -> None:
        """After ``job`` was stored; ``holder`` is another id when it was a unique duplicate."""

    def started(self, job: JobRecord) -> None:
        """An attempt starts, on the thread that runs it."""

    def succeeded(self, job: JobRecord, duration: float) -> None:
        """The attempt returned."""

    def failed(
        self, job: JobRecord, error: BaseException, duration: float, retry_at: float
    ) -> None:
        """The attempt raised and the job will run again at ``retry_at``."""

    def dead(self, job: JobRecord, error: BaseException | None) -> None:
        """The job died: out of attempts, unreadable, its worker lost, or expired.

        ``error`` is the last attempt's exception (None when the worker was lost).
        """

    def released(self, job: JobRecord) -> None:
        """The job was handed back unfinished (a stop), its attempt not counted."""

    def cancelled(self, job: JobRecord) -> None:
        """The job was cancelled while it ran."""

    def timed_out(self, job: JobRecord, duration: float) -> None:
        """The attempt ran past the job's timeout and was stopped."""

    def snoozed(self, job: JobRecord, run_at: float) -> None:
        """The job asked to run again at ``run_at`` without spending an attempt."""

    def process_started(self, node: str) -> None:
        """A worker process (a node) starts running jobs."""

    def process_stopped(self, node: str) -> None:
        """The node stopped running jobs."""


class Hooks:
    """A queue's middlewares in order, each call guarded (see the module docstring)."""

    def __init__(self, middlewares: Sequence[Middleware] = ()) -> None:
        self.chain: tuple[Middleware, ...] = ()
        for middleware in middlewares:
            self.add(middleware)

    def add(self, middleware: Middleware) -> None:
        if not isinstance(middleware, Middleware):
            raise TypeError(
                f"a middleware must be an exqueue.Middleware, not {type(middleware).__name__}"
            )
        self.chain = (*self.chain, middleware)

    def __bool__(self) -> bool:
        return bool(self.chain)

    def _each(self, hook: str, job: JobRecord | NewJob | None, *args: Any) -> None:
        for middleware in self.chain:
            try:
                getattr(middleware, hook)(*args)
            except Exception:
                extra = job_extra(job) if job is not None else None
                log.exception("middleware %r raised in %s", middleware, hook, extra=extra)

    def enqueue(self, job: NewJob) -> NewJob:
        for middleware in self.chain:
            try:
                changed = middleware.enqueue(job)
            except Exception:
                log.exception("middleware %r raised in enqueue", middleware, extra=job_extra(job))
                continue
            if isinstance(changed, NewJob) and changed.id == job.id:
                job = changed
            else:
                log.error(
                    "middleware %r returned %r from enqueue, not the job; ignored",
                    middleware,
                    type(changed).__name__,
                    extra=job_extra(job),
                )
        return job

    def enqueued(self, job: NewJob, holder: str) -> None:
        self._each("enqueued", job, job, holder)

    def started(self, job: JobRecord) -> None:
        self._each("started", job, job)

    def succeeded(self, job: JobRecord, duration: float) -> None:
        self._each("succeeded", job, job, duration)

    def failed(
        self, job: JobRecord, error: BaseException, duration: float, retry_at: float
    ) -> None:
        self._each("failed", job, job, error, duration, retry_at)

    def dead(self, job: JobRecord, error: BaseException | None) -> None:
        self._each("dead", job, job, error)

    def released(self, job: JobRecord) -> None:
        self._each("released", job, job)

    def cancelled(self, job: JobRecord) -> None:
        self._each("cancelled", job, job)

    def timed_out(self, job: JobRecord, duration: float) -> None:
        self._each("timed_out", job, job, duration)

    def snoozed(self, job: JobRecord, run_at: float) -> None:
        self._each("snoozed", job, job, run_at)

    def process_started(self, node: str) -> None:
        self._each("process_started", None, node)

    def process_stopped(self, node: str) -> None:
        self._each("process_stopped", None, node)


class DeadCallback(Middleware):
    """``queue.on_dead(callback)``: the ``dead`` hook, given the decoded :class:`Job`."""

    def __init__(
        self,
        callback: Callable[[Job, BaseException | None], None],
        to_job: Callable[[JobRecord], Job],
    ) -> None:
        self.callback = callback
        self.to_job = to_job

    def dead(self, job: JobRecord, error: BaseException | None) -> None:
        self.callback(self.to_job(job), error)

    def __repr__(self) -> str:
        return f"on_dead reporter {self.callback!r}"
