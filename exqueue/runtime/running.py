"""Running one thread job: decoding it, calling its function, recording its outcome.

:class:`JobRunner` is the part of :class:`~exqueue.runtime.core.Runtime` that a
job thread (and the async runner's finisher, through ``_prepare`` and
``_conclude``) calls for each job; the node's lifecycle, its dispatcher and its
threads stay in :mod:`.core`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from threading import get_ident
from types import MappingProxyType

from exqueue.errors import JobCancelled, JobTimeout, SerializationError, Snooze
from exqueue.guards import check_result
from exqueue.job import JobContext, _current
from exqueue.middleware import job_extra
from exqueue.runtime.acks import Acker, Recorder
from exqueue.runtime.aio import Prepared, Undecodable, timed_out
from exqueue.runtime.config import NodeConfig
from exqueue.runtime.lanes import Claimer, Lane
from exqueue.runtime.observe import DEAD, SUCCEEDED, Tally
from exqueue.runtime.timeouts import Watch, Watchdog
from exqueue.storage import (
    CANCELLED,
    SNOOZE,
    JobRecord,
    SnoozeRequest,
    Storage,
    SupportsSnooze,
)

log = logging.getLogger("exqueue")

_NO_META: Mapping[str, str] = MappingProxyType({})


class _Abandoned(BaseException):
    """A job thread whose job the watchdog abandoned: it ends, recording nothing."""


class JobRunner:
    """Runs one job on the calling thread and records its outcome (a Runtime's part)."""

    # Set by Runtime.__init__.
    config: NodeConfig
    storage: Storage
    _recorder: Recorder
    _claimer: Claimer
    _acker: Acker | None
    _tally: Tally | None
    _watchdog: Watchdog
    _watch_all: bool
    _notes: dict[str, int]

    def _execute(
        self,
        lane: Lane,
        record: JobRecord,
        token: str,
        own: dict[str, list[float]] | None = None,
        kept: list[tuple[str, str]] | None = None,
    ) -> bool:
        """Run one job; True when its success was queued for the acker or ``kept``."""
        try:
            return self._run(lane, record, token, own, kept)
        except _Abandoned:
            raise
        except Exception:
            log.exception(
                "internal error while handling job %s", record.id, extra=job_extra(record)
            )
            return False

    def _prepare(self, record: JobRecord) -> Prepared:
        """The job's arguments and context; :class:`Undecodable` when its payload is bad."""
        try:
            args, kwargs = self.config.codec.decode(record.payload)
        except BaseException as exc:  # whatever a decoder raises, no retry can read it
            raise Undecodable(exc) from exc
        context = JobContext(
            record.id,
            record.worker,
            record.attempt,
            record.max_attempts,
            # Read-only: a job must not edit what a backend may keep.
            MappingProxyType(record.meta) if record.meta else _NO_META,
            record.priority,
        )
        hooks = self.config.hooks
        if hooks.chain:  # not ``if hooks``: Hooks.__bool__ is a call per job
            hooks.started(record)
        return args, kwargs, context

    def _run(
        self,
        lane: Lane,
        record: JobRecord,
        token: str,
        own: dict[str, list[float]] | None,
        kept: list[tuple[str, str]] | None,
    ) -> bool:
        try:
            args, kwargs, context = self._prepare(record)
        except Undecodable as bad:
            return self._conclude(lane, record, token, bad)
        began = time.monotonic()
        watch = None
        noted = False  # a job without a timeout, noted for a cancel (no lock, no object)
        if record.timeout is not None:
            watch = self._watchdog.watch(record, token, lane)
        elif self._watch_all:
            self._notes[record.id] = get_ident()  # Watchdog.enter, inline
            noted = True
        error: BaseException | None = None
        reset = _current.set(context)
        try:
            try:
                result = lane.worker.fn(*args, **kwargs)
                if result is not None:  # None, the usual result, needs no check
                    check_result(result)
                    if isinstance(result, Snooze):
                        error = result
            except BaseException as exc:  # a job's SystemExit is a failure too, not our exit
                error = exc
            finally:
                _current.reset(reset)
        except (JobTimeout, JobCancelled) as stray:  # raised in the watchdog's race, above
            error = error if error is not None else stray
        while noted:
            try:
                if self._notes.pop(record.id, None) is None:  # Watchdog.leave, inline
                    watch = self._watchdog.leave(record.id)
                noted = False
            except (JobTimeout, JobCancelled) as stray:  # the cancel's, as the job returned
                error = error if error is not None else stray
        if watch is not None:
            error = self._settle(watch, error)
        return self._conclude(lane, record, token, error, time.monotonic() - began, own, True, kept)

    def _settle(self, watch: Watch, error: BaseException | None) -> BaseException | None:
        """Claim the outcome from the watchdog; the error to record."""
        while True:
            try:
                owned = self._watchdog.settle(watch)
                break
            except (JobTimeout, JobCancelled) as stray:  # raised as the job returned
                error = error if error is not None else stray
        if not owned:
            raise _Abandoned
        if watch.cancelled and isinstance(error, JobCancelled):
            return error
        if watch.fired and isinstance(error, JobTimeout) and not error.args:
            assert watch.record is not None and watch.record.timeout is not None
            return timed_out(watch.record.timeout)
        return error

    def _conclude(
        self,
        lane: Lane,
        record: JobRecord,
        token: str,
        error: BaseException | None,
        duration: float | None = None,
        own: dict[str, list[float]] | None = None,
        thread: bool = False,
        kept: list[tuple[str, str]] | None = None,
    ) -> bool:
        """Record an attempt's outcome; True when its success was queued for the acker.

        ``duration`` is the attempt's run time; an async job's is taken from its
        claim (``started_at``). ``own`` is the calling thread's success counter
        (see ``runtime.observe.Tally``); without one, successes go to the shared tally.
        ``kept``: the job thread's successes not yet written, where its lane writes
        them with its next claim (``_write_kept``).
        """
        if duration is None:
            started = record.started_at
            duration = max(self.config.clock() - started, 0.0) if started is not None else 0.0
        if isinstance(error, Undecodable):
            cause = error.cause
            reason = (
                cause
                if isinstance(cause, SerializationError)
                else f"{type(cause).__name__}: {cause}"
            )
            text = f"payload could not be decoded: {reason}"
            if self._recorder.bury(record, token, text):
                if self._tally is not None:
                    self._tally.add(record.worker, DEAD, 0.0)
                log.error(
                    "job %s (%s) is dead: %s",
                    record.id,
                    record.worker,
                    text,
                    extra=job_extra(record),
                )
                self.config.report_dead(record.id, cause)
            return False
        hooks = self.config.hooks
        if isinstance(error, JobCancelled):
            if self._recorder.bury(record, token, CANCELLED):
                log.info(
                    "job %s (%s) was cancelled while running",
                    record.id,
                    record.worker,
                    extra=job_extra(record),
                )
                if hooks:
                    hooks.cancelled(record)
            return False
        if isinstance(error, Snooze):
            error = self._snooze(record, token, error)
            if error is None:
                return False
        if error is not None:
            if hooks and isinstance(error, JobTimeout):
                hooks.timed_out(record, duration)
            self._recorder.failure(lane.worker, record, token, error, duration)
            return False
        self._count_success(record, duration, own)
        if kept is not None and lane.short():
            # A short-job lane's thread runs its claimed batch alone (see SHORT_JOB):
            # its successes go in one call with the lane's next claim once the batch
            # is done, where a write per job cost more than the jobs. Their leases
            # stay held (and extended) until then; a kill re-runs at most a batch.
            kept.append((record.id, token))
            if hooks.chain:
                hooks.succeeded(record, duration)
            return True
        acker = self._acker
        if acker is not None:
            # The one thread of a lane (``thread``) writes its success itself when
            # the acker is idle: its successes could never share a batch anyway.
            # With more threads, writing its own made batches smaller (4 threads,
            # Redis: 3.6 -> 2.1 jobs per write) for no less CPU: they queue.
            # On a store that finishes in parallel (FINISH_IN_PARALLEL), each thread
            # writes its own with the claim for its slot, side by side: one round
            # trip per job, none waiting for another's (PostgreSQL, 4 threads:
            # 2,410 -> 3,010 jobs/s), except on a short-job lane, whose one busy
            # thread would then write each success alone instead of in batches.
            parallel = thread and lane.parallel and not lane.short()
            single = (thread and lane.worker.concurrency == 1) or parallel
            queued = acker.submit(record.id, token, single, parallel)
            if not queued:
                # With its lane's next claim, where the storage can (Claimer.finish).
                acker.write_own(record.id, token, lane if lane.finishes else None)
            if hooks.chain:
                hooks.succeeded(record, duration)
            return queued
        done = None
        if thread and lane.finishes:  # the success and the lane's next claim in one call
            done = self._claimer.finish(lane, [(record.id, token)])
        self._recorder.success(record.id, token, done)
        if hooks.chain:
            hooks.succeeded(record, duration)
        return False

    def _write_kept(self, lane: Lane, kept: list[tuple[str, str]], claim: bool = True) -> None:
        """Write the successes ``kept`` by a job thread of ``lane``; ``kept`` is emptied.

        With ``claim``, the thread's job is over: the write also claims the lane's
        next jobs where it wants some (the thread's slot counts as free, and it takes
        one of the claimed jobs itself).
        """
        acker = self._acker
        assert acker is not None  # successes are kept only beside an acker's storage
        batch = kept.copy()
        kept.clear()
        done = self._claimer.finish(lane, batch) if claim else None
        self._recorder.successes(acker.storage, batch, done)

    def _count_success(
        self, record: JobRecord, duration: float, own: dict[str, list[float]] | None
    ) -> None:
        """Count a success for the history: in the thread's own counter, lock-free, if any."""
        if own is not None:
            counted = own.get(record.worker)
            if counted is None:
                own[record.worker] = [1, duration]
            else:
                counted[0] += 1
                counted[1] += duration
        elif self._tally is not None:
            self._tally.add(record.worker, SUCCEEDED, duration)

    def _snooze(self, record: JobRecord, token: str, snooze: Snooze) -> BaseException | None:
        """Put the job back for later, attempt unspent; the failure to record instead, if any."""
        storage = self.storage
        if SNOOZE not in storage.capabilities or not isinstance(storage, SupportsSnooze):
            return RuntimeError(f"{type(storage).__name__} cannot snooze jobs (no SNOOZE)")
        limit = self.config.max_snoozes
        request = SnoozeRequest(record.id, token, self.config.clock() + snooze.seconds, limit)
        outcome: list[str] = []

        def call() -> bool:
            outcome.append(storage.snooze(request))
            return outcome[-1] != "lost"

        if not self._recorder.record(record.id, "snooze", call):
            return None  # the lease was lost: nothing to record
        if outcome[-1] == "snoozed":
            hooks = self.config.hooks
            if hooks:
                hooks.snoozed(record, request.run_at)
            return None
        return RuntimeError(f"the job snoozed {limit} times, the most a job may (max_snoozes)")
