"""The worker runtime: claiming, running, acknowledging, heartbeats and recovery.

One dispatcher claims jobs for every registered worker type while it has free
slots (``concurrency`` per type) and hands them to that type's lane: a buffer
and ``concurrency`` threads that take jobs from it. An acker thread writes
successes in batches where the backend can. A
heartbeat thread extends the leases of running jobs and, now and then, recovers
jobs whose lease expired on any node. On backends with a wake-up signal a
listener thread turns it into a local event, so idle workers block instead of
polling; elsewhere the dispatcher polls with a back-off up to ``poll_interval``.

All retry policy is applied here: the attempt number comes from the stored job,
the delay from the worker type's backoff, death when attempts run out.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from exqueue.errors import SerializationError
from exqueue.guards import check_result
from exqueue.job import JobContext, _current
from exqueue.storage import (
    COMPLETE_MANY,
    PERSISTENT,
    WAKEUP,
    WORKER_LOST,
    JobRecord,
    SupportsCompleteMany,
    SupportsWakeup,
)

if TYPE_CHECKING:
    from exqueue.queue import Queue, WorkerType

log = logging.getLogger("exqueue")

#: The shortest idle poll; the dispatcher doubles it up to the queue's poll_interval.
MIN_POLL = 0.02
#: A lane buffers about this many seconds of work beyond its running jobs.
BUFFER_SECONDS = 0.1
#: Stored error texts are cut to this many characters (the end, where the error is).
MAX_ERROR_CHARS = 8000


def format_error(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc)).rstrip()
    return text[-MAX_ERROR_CHARS:]


class _Lane:
    """One worker type on this node: its claimed-but-not-started jobs and its threads.

    ``concurrency`` threads take jobs from ``buffer``; the dispatcher refills it.
    A lane buffers at most about ``BUFFER_SECONDS`` of work beyond its running
    jobs (measured from recent job durations), so a node never hoards jobs that
    other nodes could start sooner, and a buffered lease never runs out unused.
    """

    def __init__(self, worker: WorkerType[Any, Any], max_prefetch: int) -> None:
        self.worker = worker
        self.buffer: deque[tuple[JobRecord, str]] = deque()
        self.ready = threading.Condition()
        self.executing = 0
        self.closing = False
        # One claim at a time per lane, by the dispatcher or by one of its threads.
        self.claim_lock = threading.Lock()
        self.claiming = False  # a job thread is claiming (under ``ready``)
        self.more_waiting = False  # the last claim came back full
        self.max_prefetch = 0 if worker.serial else max_prefetch
        # None until a job has finished here: a process that dies on its first job
        # (a poison job) must not take innocent buffered jobs' attempts with it.
        self.mean_duration: float | None = None

    def prefetch(self) -> int:
        if self.max_prefetch == 0 or self.mean_duration is None:
            return 0
        return min(self.max_prefetch, int(BUFFER_SECONDS / max(self.mean_duration, 1e-6)))

    def wanted(self) -> int:
        """How many jobs to claim now: 0 unless the lane is worth a round trip."""
        outstanding = self.executing + len(self.buffer)
        prefetch = self.prefetch()
        want = self.worker.concurrency + prefetch - outstanding
        # Refill in batches, but never leave a thread idle.
        if outstanding < self.worker.concurrency or want > prefetch // 2:
            return max(want, 0)
        return 0

    def observe(self, seconds: float) -> None:
        if self.mean_duration is None:
            self.mean_duration = seconds
        else:
            self.mean_duration = 0.8 * self.mean_duration + 0.2 * seconds


class _Acker:
    """Records successes in batches: those that arrive while one batch is being
    written go together in the next, so a slow commit costs once per batch, not
    once per job. With a fast store the batches are simply of one."""

    def __init__(self, runtime: Runtime, storage: SupportsCompleteMany) -> None:
        self.runtime = runtime
        self.storage = storage
        self.pending: list[tuple[str, str]] = []
        self.in_flight = 0
        self.closing = False
        self.waiting = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._loop, name="exqueue-acker", daemon=True)
        self.thread.start()

    def submit(self, job_id: str, token: str) -> None:
        with self.cond:
            self.pending.append((job_id, token))
            if self.waiting:  # a notify costs more than the append; skip it when busy
                self.cond.notify()

    def busy(self) -> bool:
        with self.cond:
            return bool(self.pending or self.in_flight)

    def close(self, timeout: float) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify()
        self.thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.pending and not self.closing:
                    self.waiting = True
                    self.cond.wait()
                    self.waiting = False
                if not self.pending:
                    return
                batch, self.pending = self.pending, []
                self.in_flight = len(batch)
            try:
                self.runtime._record_successes(self.storage, batch)
            finally:
                with self.cond:
                    self.in_flight = 0


class Runtime:
    """Runs one queue's worker types until stopped, or until drained."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.storage = queue.storage
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lanes = {
            name: _Lane(worker, queue.prefetch) for name, worker in queue.workers.items()
        }
        # job id -> claim token, for jobs this node has claimed and still holds
        self._held: dict[str, str] = {}
        self._threads: list[threading.Thread] = []
        self._finished = 0
        # Bumped whenever a job's outcome is recorded; a drain watches it.
        self._progress = 0
        self._acker: _Acker | None = None
        self._listening = False  # a listener thread turns storage wake-ups into _wake

    # -- lifecycle -------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def _open(self, listen: bool) -> None:
        caps = self.storage.capabilities
        # Batching pays for a durable commit per success; an in-process store
        # records one faster than the acker thread can be handed it.
        if (
            COMPLETE_MANY in caps
            and PERSISTENT in caps
            and isinstance(self.storage, SupportsCompleteMany)
        ):
            self._acker = _Acker(self, self.storage)
        for name, lane in self._lanes.items():
            for number in range(lane.worker.concurrency):
                thread = threading.Thread(
                    target=self._lane_loop, args=(lane,), name=f"exqueue-{name}-{number}"
                )
                thread.daemon = True
                thread.start()
        self._recover(owner=self.queue.node)
        self._spawn(self._heartbeat_loop, "exqueue-heartbeat")
        self._listening = (
            listen
            and WAKEUP in self.storage.capabilities
            and isinstance(self.storage, SupportsWakeup)
        )
        if self._listening:
            self._spawn(self._listen_loop, "exqueue-listener")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def start(self) -> None:
        self._open(listen=True)
        self._spawn(self._dispatch_loop, "exqueue-dispatcher")
        log.info("exqueue node %s started: %s", self.queue.node, ", ".join(self.queue.workers))

    def stop(self, timeout: float) -> None:
        self._stopping.set()
        self._wake.set()
        # Buffered jobs have not started: hand them back at once, attempt uncounted.
        for lane in self._lanes.values():
            with lane.ready:
                lane.closing = True
                unstarted = list(lane.buffer)
                lane.buffer.clear()
                lane.ready.notify_all()
            for record, token in unstarted:
                with self._lock:
                    self._held.pop(record.id, None)
                self._release(record.id, token)
        deadline = time.monotonic() + max(timeout, 0.0)
        while self._busy() and time.monotonic() < deadline:
            self._wake.wait(min(0.05, max(deadline - time.monotonic(), 0.0)))
            self._wake.clear()
        if self._acker is not None:
            # Successes first: a job whose success is still queued must not be released.
            self._acker.close(timeout=2 * self.queue.lease)
        with self._lock:
            unfinished = list(self._held.items())
            self._held.clear()
        for job_id, token in unfinished:
            if self._release(job_id, token):
                log.warning("job %s did not finish within the stop timeout; released", job_id)
        for thread in self._threads:
            thread.join(timeout=2.0)

    def _release(self, job_id: str, token: str) -> bool:
        return self._ack(job_id, "release", lambda: self.storage.release(job_id, token), patience=5)

    def drain(self, timeout: float | None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        # A drain ends when nothing is runnable, so it needs no wake-up listener.
        self._open(listen=False)
        try:
            failures = 0
            while deadline is None or time.monotonic() < deadline:
                self._wake.clear()
                with self._lock:
                    progress_before = self._progress
                try:
                    claimed = self._dispatch()
                    failures = 0
                except Exception:
                    failures += 1
                    log.exception("claiming jobs failed; retrying")
                    time.sleep(min(0.05 * 2**failures, 2.0))
                    continue
                if claimed:
                    continue
                # Done only if no job finished since this claim round began: a job
                # that finished meanwhile may have made another runnable (a serial
                # successor, a retry with no delay, a job it enqueued).
                with self._lock:
                    settled = self._progress == progress_before
                if settled and not self._busy():
                    break
                self._wake.wait(0.5)
        finally:
            self.stop(timeout=0 if deadline is None else max(deadline - time.monotonic(), 0))
        return self._finished

    def _busy(self) -> bool:
        if self._acker is not None and self._acker.busy():
            return True
        for lane in self._lanes.values():
            with lane.ready:  # a job moves from buffer to executing under this lock
                if lane.executing or lane.buffer or lane.claiming:
                    return True
        return False

    # -- claiming --------------------------------------------------------------------

    def _dispatch(self) -> int:
        """Claim jobs for every lane that wants some; returns how many were claimed."""
        claimed = 0
        for lane in self._lanes.values():
            if self._stopping.is_set():
                break
            with lane.claim_lock:
                claimed += self._claim(lane)
        return claimed

    def _claim(self, lane: _Lane) -> int:
        """Claim what ``lane`` wants into its buffer (``lane.claim_lock`` held)."""
        with lane.ready:
            want = lane.wanted()
        if want <= 0:
            return 0
        now = self.queue.clock()
        token = uuid.uuid4().hex
        records = self.storage.claim(
            lane.worker.name,
            want,
            now=now,
            owner=self.queue.node,
            token=token,
            lease_until=now + self.queue.lease,
            serial=lane.worker.serial,
        )
        # A full claim suggests more are waiting: the lane's threads then claim
        # for themselves when they run dry, without a round of the dispatcher.
        lane.more_waiting = len(records) == want
        if not records:
            return 0
        with self._lock:
            for record in records:
                self._held[record.id] = token
        with lane.ready:
            lane.buffer.extend((record, token) for record in records)
            lane.ready.notify(len(records))
        return len(records)

    def _claim_here(self, lane: _Lane) -> bool:
        """A job thread whose lane ran dry claims for it (``lane.ready`` held).

        Only when the last claim came back full, and only if no one else is
        claiming for the lane; the dispatcher stays in charge of idle lanes,
        polling and wake-ups. Saves two thread hand-offs per claim.
        """
        if not lane.more_waiting or self._stopping.is_set():
            return False
        if not lane.claim_lock.acquire(blocking=False):
            return False
        lane.claiming = True
        lane.ready.release()
        try:
            if self._claim(lane) > 0:
                return True
            self._wake.set()  # came up empty: the dispatcher (or a drain) takes over
            return False
        except Exception as exc:
            lane.more_waiting = False  # the dispatcher retries, with its backoff
            log.warning("claiming jobs failed (%s); the dispatcher retries", exc)
            self._wake.set()
            return False
        finally:
            lane.claim_lock.release()
            lane.ready.acquire()
            lane.claiming = False

    def _lane_loop(self, lane: _Lane) -> None:
        ready = lane.ready
        wake = self._wake
        with ready:
            while True:
                while not lane.buffer and not lane.closing:
                    if not self._claim_here(lane):
                        ready.wait()
                if not lane.buffer:
                    return
                record, token = lane.buffer.popleft()
                lane.executing += 1
                ready.release()
                started = time.monotonic()
                deferred = False
                try:
                    deferred = self._execute(lane.worker, record, token)
                finally:
                    # Count the job as finished before the lane looks idle, so a
                    # drain that sees an idle lane also sees this job's completion.
                    with self._lock:
                        if not deferred:  # a queued success keeps its lease until written
                            self._held.pop(record.id, None)
                        self._finished += 1
                        self._progress += 1
                    # Finishing and taking the next job share one hold of the lock.
                    ready.acquire()
                    lane.executing -= 1
                    lane.observe(time.monotonic() - started)
                # The dispatcher needs waking only when this lane wants jobs that
                # its own threads will not claim.
                if not wake.is_set() and not lane.more_waiting and lane.wanted():
                    wake.set()

    def _dispatch_loop(self) -> None:
        idle = MIN_POLL
        failures = 0
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                claimed = self._dispatch()
                failures = 0
            except Exception as exc:
                failures += 1
                pause = min(0.1 * 2**failures, 10.0)
                log.warning("claiming jobs failed (%s); retrying in %.1fs", exc, pause)
                self._stopping.wait(pause)
                continue
            if claimed:
                idle = MIN_POLL
                continue
            woken = self._wake.wait(self.queue.poll_interval if self._listening else idle)
            idle = MIN_POLL if woken else min(idle * 2, self.queue.poll_interval)

    def _listen_loop(self) -> None:
        assert isinstance(self.storage, SupportsWakeup)
        while not self._stopping.is_set():
            try:
                if self.storage.wait_for_jobs(min(1.0, self.queue.poll_interval)):
                    self._wake.set()
            except Exception as exc:
                log.warning("waiting for new jobs failed (%s); retrying in 1s", exc)
                self._stopping.wait(1.0)

    # -- running one job -------------------------------------------------------------

    def _execute(self, worker: WorkerType[Any, Any], record: JobRecord, token: str) -> bool:
        """Run one job; True when its success was queued for the acker."""
        try:
            return self._run(worker, record, token)
        except Exception:
            log.exception("internal error while handling job %s", record.id)
            return False

    def _run(self, worker: WorkerType[Any, Any], record: JobRecord, token: str) -> bool:
        try:
            args, kwargs = self.queue.codec.decode(record.payload)
        except SerializationError as exc:
            error = f"payload could not be decoded: {exc}"
            if self._bury(record, token, error):
                log.error("job %s (%s) is dead: %s", record.id, record.worker, error)
                self.queue._report_dead(record.id, exc)
            return False
        context = JobContext(record.id, record.worker, record.attempt, record.max_attempts)
        reset = _current.set(context)
        try:
            check_result(worker.fn(*args, **kwargs))
        except BaseException as exc:  # a job's SystemExit is a failure too, not our exit
            self._failed(worker, record, token, exc)
            return False
        finally:
            _current.reset(reset)
        if self._acker is not None:
            self._acker.submit(record.id, token)
            return True
        self._ack(record.id, "success", lambda: self.storage.complete(record.id, token))
        return False

    def _record_successes(
        self, storage: SupportsCompleteMany, batch: list[tuple[str, str]]
    ) -> None:
        """Write one batch of successes (on the acker's thread)."""
        done: set[str] = set()

        def write() -> bool:
            done.update(storage.complete_many(batch))
            return True

        written = self._ack(
            f"{len(batch)} jobs" if len(batch) > 1 else batch[0][0], "success", write
        )
        lost = [job_id for job_id, _ in batch if job_id not in done]
        if written and lost:
            log.warning(
                "lease on jobs %s was lost before their success was recorded; "
                "they run again elsewhere",
                ", ".join(lost),
            )
        with self._lock:
            for job_id, _ in batch:
                self._held.pop(job_id, None)
            self._progress += 1
        self._wake.set()

    def _failed(
        self, worker: WorkerType[Any, Any], record: JobRecord, token: str, exc: BaseException
    ) -> None:
        error = format_error(exc)
        if record.attempt < record.max_attempts:
            delay = worker.backoff.delay(record.attempt)
            run_at = self.queue.clock() + delay
            if self._ack(
                record.id,
                "retry",
                lambda: self.storage.schedule_retry(record.id, token, run_at=run_at, error=error),
            ):
                log.info(
                    "job %s (%s) failed on attempt %d of %d, retrying in %.3gs: %s: %s",
                    record.id,
                    record.worker,
                    record.attempt,
                    record.max_attempts,
                    delay,
                    type(exc).__name__,
                    exc,
                )
        elif self._bury(record, token, error):
            log.error(
                "job %s (%s) is dead after %d attempts",
                record.id,
                record.worker,
                record.attempt,
                exc_info=exc,
            )
            self.queue._report_dead(record.id, exc)

    def _bury(self, record: JobRecord, token: str, error: str) -> bool:
        return self._ack(
            record.id, "death", lambda: self.storage.bury(record.id, token, error=error)
        )

    def _ack(
        self, job_id: str, what: str, call: Callable[[], bool], patience: float | None = None
    ) -> bool:
        """Record an outcome, retrying through storage errors while the lease may hold.

        False when the lease was lost (the job runs, or ran, again elsewhere) or the
        storage stayed unreachable: then the lease expires and the job runs again.
        """
        give_up = time.monotonic() + (patience if patience is not None else 2 * self.queue.lease)
        pause = 0.05
        while True:
            try:
                ok = call()
            except Exception as exc:
                if time.monotonic() + pause > give_up:
                    log.error(
                        "could not record the %s of job %s (%s); it will run again "
                        "once its lease expires",
                        what,
                        job_id,
                        exc,
                    )
                    return False
                log.warning(
                    "recording the %s of job %s failed (%s); retrying in %.2fs",
                    what,
                    job_id,
                    exc,
                    pause,
                )
                time.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            if not ok:
                log.warning(
                    "lease on job %s was lost before its %s was recorded; "
                    "the job runs again elsewhere",
                    job_id,
                    what,
                )
            return ok

    # -- leases ----------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        interval = self.queue.lease / 3
        last_recovery = time.monotonic()
        while not self._stopping.wait(interval):
            try:
                self._heartbeat()
                if time.monotonic() - last_recovery >= self.queue.lease / 2:
                    last_recovery = time.monotonic()
                    self._recover()
            except Exception as exc:
                log.warning("heartbeat failed (%s); retrying in %.1fs", exc, interval)

    def _heartbeat(self) -> None:
        with self._lock:
            by_token: dict[str, list[str]] = {}
            for job_id, token in self._held.items():
                by_token.setdefault(token, []).append(job_id)
        lease_until = self.queue.clock() + self.queue.lease
        for token, job_ids in by_token.items():
            kept = set(self.storage.extend(token, job_ids, lease_until))
            with self._lock:
                # A job that finished since the snapshot was not extended, and was not lost.
                lost = [j for j in job_ids if j not in kept and self._held.get(j) == token]
                for job_id in lost:
                    del self._held[job_id]
            if lost:
                log.warning("lost the lease on jobs %s; they will run again", ", ".join(lost))

    def _recover(self, owner: str | None = None) -> None:
        recovered = self.storage.recover(self.queue.clock(), owner=owner, error=WORKER_LOST)
        if recovered.waiting:
            log.warning("recovered %d jobs of lost workers", len(recovered.waiting))
            self._wake.set()
        for job_id in recovered.dead:
            log.error("job %s is dead: its worker was lost on its last attempt", job_id)
            self.queue._report_dead(job_id, None)


def run_until_signal(queue: Queue, stop_timeout: float) -> None:
    """``queue.run()``: start, block until SIGINT/SIGTERM, then stop gracefully."""
    stop = threading.Event()
    handlers: dict[signal.Signals, Any] = {}

    def request_stop(signum: int, frame: object) -> None:
        log.info("received signal %d, stopping", signum)
        stop.set()

    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        for signum in (signal.SIGINT, signal.SIGTERM):
            handlers[signum] = signal.signal(signum, request_stop)
    queue.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        queue.stop(stop_timeout)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
