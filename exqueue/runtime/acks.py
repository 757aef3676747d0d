"""Acknowledgement: writing each job's outcome to the storage, fenced by its token.

The :class:`Recorder` turns an outcome into one transition (complete, retry,
bury, release), asking :mod:`exqueue.policy` whether a failure is retried, and
retries through storage errors while the lease may still hold. The
:class:`Acker` records successes in batches on stores where a commit is dear.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from exqueue.middleware import job_extra
from exqueue.policy import after_failure
from exqueue.runtime.config import Ledger, NodeConfig
from exqueue.runtime.observe import DEAD, FAILED, Tally
from exqueue.runtime.sched import no_wakeup_preemption
from exqueue.storage import FINISH_IN_PARALLEL, UNIQUE, JobRecord, SupportsCompleteMany

if TYPE_CHECKING:
    from exqueue.queue import WorkerType
    from exqueue.runtime.lanes import Lane

log = logging.getLogger("exqueue")

#: Writes a batch of successes with a claim (``Claimer.finish_any``): the ids
#: completed and whether the claim came back full, or None (nothing written).
FinishAny = Callable[[list[tuple[str, str]]], "tuple[list[str], bool] | None"]

#: Stored error texts are cut to this many characters (the end, where the error is).
MAX_ERROR_CHARS = 8000


def format_error(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc)).rstrip()
    return text[-MAX_ERROR_CHARS:]


def _extra(job_id: str) -> dict[str, str] | None:
    """A log record's extra for ``job_id``; none for a batch ("3 jobs")."""
    return None if " " in job_id else {"job_id": job_id}


class Recorder:
    """Records outcomes; tells the queue's reporters of each death it records."""

    def __init__(self, config: NodeConfig, ledger: Ledger) -> None:
        self.config = config
        self.storage = config.storage
        self.ledger = ledger
        self.wake = ledger.wake
        # When a job completed matters only to a unique key's period; a version-1
        # backend's complete() takes no ``now``.
        self.pass_now = UNIQUE in self.storage.capabilities
        #: Outcome counts for the store's history (None: the store keeps none).
        self.tally: Tally | None = None

    def success(self, job_id: str, token: str, done: list[str] | None = None) -> bool:
        """Record a success; ``done``: it was written already (the ids that call completed)."""
        if done is not None:
            return self._written(job_id, "success", job_id in done)
        if self.pass_now:
            clock = self.config.clock
            return self.record(
                job_id, "success", lambda: self.storage.complete(job_id, token, now=clock())
            )
        return self.record(job_id, "success", lambda: self.storage.complete(job_id, token))

    def release(self, job_id: str, token: str) -> bool:
        return self.record(job_id, "release", lambda: self.storage.release(job_id, token), 5)

    def failure(
        self,
        worker: WorkerType[Any, Any],
        record: JobRecord,
        token: str,
        exc: BaseException,
        duration: float = 0.0,
    ) -> None:
        error = format_error(exc)
        retry = after_failure(
            record.attempt, record.max_attempts, worker.backoff, self.config.clock()
        )
        if retry is None:
            if self.bury(record, token, error):
                if self.tally is not None:
                    self.tally.add(record.worker, DEAD, duration)
                log.error(
                    "job %s (%s) is dead after %d attempts",
                    record.id,
                    record.worker,
                    record.attempt,
                    exc_info=exc,
                    extra=job_extra(record),
                )
                self.config.report_dead(record.id, exc)
            return
        if self.record(
            record.id,
            "retry",
            lambda: self.storage.schedule_retry(record.id, token, run_at=retry.run_at, error=error),
        ):
            log.info(
                "job %s (%s) failed on attempt %d of %d, retrying in %.3gs: %s: %s",
                record.id,
                record.worker,
                record.attempt,
                record.max_attempts,
                retry.delay,
                type(exc).__name__,
                exc,
                extra=job_extra(record),
            )
            if self.tally is not None:
                self.tally.add(record.worker, FAILED, duration)
            if self.config.hooks:
                self.config.hooks.failed(record, exc, duration, retry.run_at)

    def bury(self, record: JobRecord, token: str, error: str) -> bool:
        return self.record(
            record.id, "death", lambda: self.storage.bury(record.id, token, error=error)
        )

    def successes(
        self,
        storage: SupportsCompleteMany,
        batch: list[tuple[str, str]],
        written_as: list[str] | None = None,
    ) -> None:
        """Write one batch of successes (on the acker's thread, or a job thread's own).

        ``written_as``: the batch was written already, with its claim
        (``Claimer.finish``), and these are the ids it completed.
        The caller wakes the dispatcher if it needs to (see ``Acker._loop``).
        """
        done: set[str] = set(written_as or ())

        def write() -> bool:
            if self.pass_now:
                done.update(storage.complete_many(batch, now=self.config.clock()))
            else:
                done.update(storage.complete_many(batch))
            return True

        written = written_as is not None or self.record(
            f"{len(batch)} jobs" if len(batch) > 1 else batch[0][0], "success", write
        )
        lost = [job_id for job_id, _ in batch if job_id not in done]
        if written and lost:
            log.warning(
                "lease on jobs %s was lost before their success was recorded; "
                "recovery handed them back (they run again unless it was their last attempt)",
                ", ".join(lost),
            )
        ledger = self.ledger
        with ledger.lock:
            for job_id, _ in batch:
                ledger.held.pop(job_id, None)
            ledger.progress += 1

    def record(
        self, job_id: str, what: str, call: Callable[[], bool], patience: float | None = None
    ) -> bool:
        """Record an outcome, retrying through storage errors while the lease may hold.

        False when the lease was lost (the job runs, or ran, again elsewhere) or the
        storage stayed unreachable: then the lease expires and the job runs again.
        """
        give_up = time.monotonic() + (patience if patience is not None else 2 * self.config.lease)
        pause = 0.05
        while True:
            try:
                ok = call()
            except Exception as exc:
                extra = _extra(job_id)
                if time.monotonic() + pause > give_up:
                    log.error(
                        "could not record the %s of job %s (%s); it will run again "
                        "once its lease expires",
                        what,
                        job_id,
                        exc,
                        extra=extra,
                    )
                    return False
                log.warning(
                    "recording the %s of job %s failed (%s); retrying in %.2fs",
                    what,
                    job_id,
                    exc,
                    pause,
                    extra=extra,
                )
                time.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            return self._written(job_id, what, ok)

    def _written(self, job_id: str, what: str, ok: bool) -> bool:
        """``ok``: whether the outcome was recorded; warn when the lease was lost."""
        if not ok:
            log.warning(
                "lease on job %s was lost before its %s was recorded; recovery "
                "handed it back (it runs again unless that was its last attempt)",
                job_id,
                what,
                extra=_extra(job_id),
            )
        return ok


#: While this process keeps a core busy (``SATURATED`` CPU seconds a second over
#: about ``CPU_WINDOW``), the acker waits up to ``GATHER_WAIT`` for a batch of one
#: success per ``GATHER_SHARE`` job threads (``Acker.gather``) before writing, so
#: its writes stay large. Small ones cost more CPU per job (256 threads, 10 ms
#: jobs: batches of 7 cost 96 µs of CPU per job, batches of 40 cost 64 µs), which
#: slowed the jobs, which kept the batches small. Without that saturation a wait
#: would only delay the freed slots' claims.
GATHER_SHARE = 8
GATHER_WAIT = 0.002
SATURATED = 0.85
CPU_WINDOW = 0.05
#: On a store that finishes in parallel (``FINISH_IN_PARALLEL``), at most this many
#: job threads write their own success (with the claim for its slot) at once, so a
#: lane of up to 4 threads writes as before; the others queue theirs for the acker,
#: which writes its batch (with a claim too) beside them. Left unbounded, 64
#: threads kept 64 statements in flight, and PostgreSQL on 2 cores ran fewer jobs
#: than with 4 threads (no-op: 3,607 against 4,056 jobs/s; ``incr``: 1,869 against
#: 2,484; with the bound, at 64 threads, 13,302 and 2,976).
PARALLEL_WRITERS = 4


class Acker:
    """Records successes in batches: those that arrive while one batch is being
    written go together in the next, so a slow commit costs once per batch, not
    once per job. With a fast store the batches are simply of one.

    At most ``bound`` successes queue behind the batch being written; a job
    thread with one more waits for room. A success not yet written is lost
    with the process and its job runs again, so the bound (the node's job
    threads) keeps a kill's re-runs to a few times the jobs that were running
    (queued, being written, waiting for room), where unbounded batches grew
    with the commit time. The price is throughput on stores whose commits are
    slow: a commit carries at most ``bound`` successes.
    """

    def __init__(
        self,
        recorder: Recorder,
        storage: SupportsCompleteMany,
        bound: int,
        starved: Callable[[], bool] = lambda: True,
    ) -> None:
        self.recorder = recorder
        self.storage = storage
        self.bound = max(bound, 1)
        #: The store finishes in parallel: the acker's writes need not wait for the
        #: job threads' own (see PARALLEL_WRITERS).
        self.parallel = FINISH_IN_PARALLEL in getattr(storage, "capabilities", ())
        #: Whether a lane wants jobs that only the dispatcher will claim for it.
        self.starved = starved
        #: Writes a job thread's own success with its lane's next claim, where the
        #: storage can (``Claimer.finish``): the ids completed, or None (not written).
        self.finish: Callable[[Lane, list[tuple[str, str]]], list[str] | None] | None = None
        #: Writes a batch of the acker's with a claim for a lane that wants jobs, where
        #: the storage can (``Claimer.finish_any``): the ids completed, or None.
        self.finish_any: FinishAny | None = None
        #: Whether any lane wants jobs now (set by the runtime; see ``_loop``).
        self.wanting: Callable[[], bool] = lambda: True
        self.pending: list[tuple[str, str]] = []
        self.in_flight = 0
        #: Ids whose successes job threads are writing themselves (``submit``).
        self.inline: set[str] = set()
        self.writing: set[str] = set()  # ids of the batch being written
        self.closing = False
        self.waiting = False
        # ``with self.lock`` where nothing waits: cheaper than the Condition's ``with``.
        self.lock = lock = threading.Lock()
        self.cond = threading.Condition(lock)  # the acker waits for successes
        self.room = threading.Condition(lock)  # job threads wait for room
        #: The batch worth waiting for while the CPU is saturated (see GATHER_SHARE);
        #: the runtime counts only thread lanes' slots (an async lane's successes free
        #: no slot when written, and its loop is measured apart).
        self.gather = self.bound // GATHER_SHARE
        #: Whether this process keeps a core busy now (see GATHER_SHARE); replaceable.
        self.saturated: Callable[[], bool] = self._cpu_saturated
        self._mark = (time.monotonic(), time.process_time())
        self._busy_share = 0.0
        self.thread = threading.Thread(target=self._loop, name="exqueue-acker", daemon=True)
        self.thread.start()

    def submit(self, job_id: str, token: str, own: bool = False, parallel: bool = False) -> bool:
        """Queue a success; False (nothing queued) when the caller is to write it itself.

        A success that finds the acker idle, nothing queued and no other thread
        writing its own is written by its job thread (``write_own``): a batch of
        one either way, without waking the acker and switching threads. Successes
        that arrive meanwhile queue for the acker as before, so batches still form
        under load. Only a caller that may block on a write passes ``own``.
        With ``parallel`` (a lane whose store finishes in parallel) other threads
        writing their own do not stop this one writing its own too, up to
        ``PARALLEL_WRITERS`` at once.
        """
        with self.lock:
            if own and not (self.pending or self.in_flight or self.closing):
                inline = self.inline
                if not inline or (parallel and len(inline) < PARALLEL_WRITERS):
                    inline.add(job_id)
                    return False
            while len(self.pending) >= self.bound and not self.closing:
                self.room.wait()
            self.pending.append((job_id, token))
            if self.waiting:  # a notify costs more than the append; skip it when busy
                self.cond.notify()
            return True

    def write_own(self, job_id: str, token: str, lane: Lane | None = None) -> None:
        """Write the success that ``submit`` handed back, on the calling job thread.

        With ``lane`` (the job's) and a storage that can, the write also claims
        the lane's next jobs: one round trip instead of two (``Claimer.finish``).
        No wake-up follows: the job thread is still counted as executing, and
        its lane loop wakes the dispatcher when the lane wants jobs.
        """
        batch = [(job_id, token)]
        try:
            finish = self.finish
            done = finish(lane, batch) if finish is not None and lane is not None else None
            if done is None:
                self.recorder.successes(self.storage, batch)
            else:
                self.recorder.successes(self.storage, batch, done)
        finally:
            with self.lock:
                self.inline.discard(job_id)
                if self.pending and self.waiting:  # queued while this one was written
                    self.cond.notify()

    def writes_soon(self) -> bool:
        """Whether a write of the acker's is queued or under way (read without the lock:
        a stale answer costs a claim round trip, or leaves it to the dispatcher's wake-up)."""
        return bool(self.pending or self.in_flight)

    def busy(self) -> bool:
        with self.lock:
            return bool(self.pending or self.in_flight)

    def close(self, timeout: float) -> set[str]:
        """Write what is queued, for up to ``timeout`` seconds; the ids still unwritten."""
        with self.cond:
            self.closing = True
            self.cond.notify()
            self.room.notify_all()
        self.thread.join(timeout)
        with self.cond:
            # A job thread may still be writing its own (the acker does not wait for it).
            unwritten = set(self.inline)
            if self.thread.is_alive():
                unwritten.update(job_id for job_id, _ in self.pending)
                unwritten |= self.writing
            return unwritten

    def _cpu_saturated(self) -> bool:
        """Whether this process used about a core or more over the last ``CPU_WINDOW``."""
        now = time.monotonic()
        since = now - self._mark[0]
        if since >= CPU_WINDOW:
            cpu = time.process_time()
            self._busy_share = (cpu - self._mark[1]) / since
            self._mark = (now, cpu)
        return self._busy_share >= SATURATED

    def _gather(self) -> None:
        """Wait (``cond`` held) up to ``GATHER_WAIT`` for a larger batch while the
        process is CPU-bound: its CPU, not the freed slots, limits the jobs then."""
        target = self.gather
        if len(self.pending) >= target or self.closing or not self.saturated():
            return
        give_up = time.monotonic() + GATHER_WAIT
        while len(self.pending) < target and not self.closing:
            left = give_up - time.monotonic()
            if left <= 0:
                return
            self.waiting = True
            self.cond.wait(left)
            self.waiting = False

    def _loop(self) -> None:
        no_wakeup_preemption()
        while True:
            with self.cond:
                # One write at a time, a job thread's own included, so that
                # successes arriving meanwhile go together in the next batch;
                # beside a few of the job threads' own on a store that finishes
                # in parallel, where successes queue only while those are busy.
                while not self.closing and (
                    not self.pending or (self.inline and not self.parallel)
                ):
                    self.waiting = True
                    self.cond.wait()
                    self.waiting = False
                if not self.pending:
                    return
                self._gather()
                batch, self.pending = self.pending, []
                self.in_flight = len(batch)
                self.writing = {job_id for job_id, _ in batch}
            full = False  # the write claimed jobs, as many as wanted
            try:
                # With a claim for the slots these jobs freed, where the storage can:
                # one round trip instead of this write and a claim after it.
                finish_any = self.finish_any
                both = finish_any(batch) if finish_any is not None else None
                if both is None:
                    self.recorder.successes(self.storage, batch)
                else:
                    self.recorder.successes(self.storage, batch, both[0])
                    full = both[1]
            except Exception:  # the thread must live on: job threads wait for its room
                log.exception("recording %d successes failed", len(batch))
            finally:
                with self.cond:
                    self.in_flight = 0
                    self.writing = set()
                    if len(batch) >= self.bound:  # only a full queue keeps threads waiting
                        self.room.notify_all()
                    # Another batch is queued: its write wakes the dispatcher, unless a
                    # lane is starved now (a serial successor the write made runnable).
                    # The last write always wakes it, after ``in_flight`` is cleared, so
                    # a drain waiting for the acker sees it idle.
                    # A write that claimed all its lane wanted leaves the dispatcher
                    # asleep unless a lane still wants jobs: the next claim is the next
                    # write's (its jobs' successes) or a job thread's, and a drain is
                    # woken by the first write whose claim comes back short.
                    quiet = bool(self.pending) or (full and not self.wanting())
                if not quiet or self.starved():
                    self.recorder.wake.set()
