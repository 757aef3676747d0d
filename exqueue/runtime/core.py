"""The worker runtime: a node's lifecycle, its dispatcher and its job threads.

One dispatcher claims jobs for every registered worker type while it has free
slots (``concurrency`` per type) and hands them to that type's lane
(:mod:`.lanes`). Each job's outcome is recorded by :mod:`.acks`, which asks
:mod:`exqueue.policy` what a failure means; successes go in batches through an
acker thread where the backend can. A heartbeat thread (:mod:`.leases`) extends
the leases of held jobs and recovers jobs whose lease expired on any node. On
backends with a wake-up signal a listener thread turns it into a local event,
so idle workers block instead of polling; elsewhere the dispatcher polls with a
back-off up to ``poll_interval``. Async worker types run as coroutines on an
event loop thread (:mod:`.aio`); thread jobs past their timeout are stopped or
abandoned by a watchdog (:mod:`.timeouts`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from exqueue.runtime.acks import GATHER_SHARE, Acker, Recorder
from exqueue.runtime.aio import AsyncRunner, claim_batch, timed_out
from exqueue.runtime.config import Ledger, NodeConfig
from exqueue.runtime.lanes import (
    NO_WATCHER,
    SHORT_RECHECK,
    WATCH_IDLE,
    WATCHING,
    Claimer,
    Lane,
)
from exqueue.runtime.leases import Leases
from exqueue.runtime.observe import Observer
from exqueue.runtime.running import JobRunner, _Abandoned
from exqueue.runtime.sched import no_wakeup_preemption
from exqueue.runtime.timeouts import Watch, Watchdog
from exqueue.storage import (
    CANCEL,
    COMPLETE_MANY,
    PERSISTENT,
    WAKEUP,
    JobRecord,
    SupportsCompleteMany,
    SupportsWakeup,
)

log = logging.getLogger("exqueue")

#: The shortest idle poll; the dispatcher doubles it up to the queue's poll_interval.
MIN_POLL = 0.02
#: How long a stop waits, beyond its timeout, for a claim in flight to return,
#: so that the claimed jobs are handed back now rather than when their lease runs out.
CLAIM_GRACE = 5.0
#: How long past its timeout a stop goes on handing back held jobs: a release
#: takes milliseconds on a healthy store, so this only bounds a failing one.
RELEASE_GRACE = 2.0


class Runtime(JobRunner):
    """Runs one queue's worker types until stopped, or until drained."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.storage = config.storage
        self._ledger = ledger = Ledger()
        self._wake = ledger.wake
        self._stopping = ledger.stopping
        self._lanes = {
            name: Lane(worker, config.prefetch) for name, worker in config.workers.items()
        }
        self._recorder = Recorder(config, ledger)
        self._claimer = Claimer(config, ledger, self._lanes, self._recorder.release)
        self._leases = Leases(config, ledger)
        self._observer = observer = Observer(config, ledger)
        self._tally = self._recorder.tally = observer.tally
        self._leases.observer = observer
        self._threads: list[threading.Thread] = []
        self._acker: Acker | None = None
        self._listening = False  # a listener thread turns storage wake-ups into _wake
        self._hurry = threading.Event()  # stop at once: running jobs are released
        self._unreachable = False  # a release failed while stopping: try no more
        self._aio: AsyncRunner | None = None
        self._watchdog = Watchdog(config.timeout_grace, self._abandon, ledger.stopping)
        #: Job threads abandoned past their timeout (they may still be stuck in C).
        self.abandoned = 0
        #: Called with ``abandoned`` after each abandonment (the CLI recycles the process).
        self.on_abandoned: Callable[[int], None] | None = None
        # Every thread job is watched where a running job can be cancelled.
        self._watch_all = CANCEL in self.storage.capabilities
        self._notes = self._watchdog.notes
        self._leases.on_cancel = self.interrupt

    # -- lifecycle -------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def _open(self, listen: bool) -> None:
        self.config.hooks.process_started(self.config.node)
        caps = self.storage.capabilities
        # Batching pays for a durable commit per success; an in-process store
        # records one faster than the acker thread can be handed it.
        if (
            COMPLETE_MANY in caps
            and PERSISTENT in caps
            and isinstance(self.storage, SupportsCompleteMany)
        ):
            # At most one success per job thread queues for the next commit: a
            # kill then re-runs a few times the jobs that were running, not a backlog.
            bound = sum(lane.worker.concurrency for lane in self._lanes.values())
            self._acker = Acker(self._recorder, self.storage, bound, self._starved)
            threads = [lane for lane in self._lanes.values() if not lane.worker.is_async]
            self._acker.gather = sum(lane.worker.concurrency for lane in threads) // GATHER_SHARE
            if self._claimer.both is not None:
                self._acker.finish = self._claimer.finish
                self._acker.finish_any = self._claimer.finish_any
                self._claimer.writes_soon = self._acker.writes_soon
                self._acker.wanting = self._wanting
                for lane in self._lanes.values():
                    lane.keeps = lane.finishes
        for lane in self._lanes.values():
            if not lane.worker.is_async:
                for _ in range(lane.worker.concurrency):
                    self._lane_thread(lane)
        async_lanes = [lane for lane in self._lanes.values() if lane.worker.is_async]
        if async_lanes:
            self._aio = AsyncRunner(
                async_lanes,
                prepare=self._prepare,
                conclude=self._conclude,
                finished=self._async_finished,
                claim_here=self._claimer.claim_here,
                hooks=self.config.hooks,
                counter=self._tally.own if self._tally is not None else None,
            )
        try:
            self._leases.check_clock()
            if not self._ledger.skewed.is_set():
                self._leases.recover(owner=self.config.node)
                self._leases.expire()
        except Exception as exc:
            # The node goes on: the heartbeat recovers again, and claims retry.
            log.error(
                "checking the clock, recovering the jobs of a previous run of node %s or "
                "burying expired jobs failed (%s: %s); starting anyway, all are retried "
                "on the heartbeat",
                self.config.node,
                type(exc).__name__,
                exc,
            )
        self._spawn(self._leases.loop, "exqueue-heartbeat")
        if self._observer.active:
            self._spawn(self._observer.loop, "exqueue-observe")
        self._listening = (
            listen
            and WAKEUP in self.storage.capabilities
            and isinstance(self.storage, SupportsWakeup)
        )
        if self._listening:
            self._spawn(self._listen_loop, "exqueue-listener")

    def _lane_thread(self, lane: Lane) -> None:
        thread = threading.Thread(
            target=self._lane_loop, args=(lane,), name=f"exqueue-{lane.worker.name}", daemon=True
        )
        thread.start()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def start(self) -> None:
        self._open(listen=True)
        self._spawn(self._dispatch_loop, "exqueue-dispatcher")
        scheduler = self.config.scheduler
        if scheduler is not None:
            ledger, poll = self._ledger, self.config.poll_interval
            loop = lambda: scheduler.loop(ledger.stopping, ledger.skewed, self.wake, poll)  # noqa: E731
            self._spawn(loop, "exqueue-scheduler")
        log.info("exqueue node %s started: %s", self.config.node, ", ".join(self.config.workers))

    def hurry(self) -> None:
        """Make a stop under way (or the next one) release running jobs at once."""
        self._hurry.set()
        self._wake.set()

    def stop(self, timeout: float) -> None:
        """Stop within ``timeout`` (plus ``RELEASE_GRACE``) even with the storage gone.

        One deadline covers waiting for running jobs, the acker's last successes
        and the releases; releases stop at the first storage error, since the
        next would wait out the same timeout (a job not released runs again once
        its lease expires).
        """
        self._stopping.set()
        self._wake.set()
        ledger = self._ledger
        end = time.monotonic() + max(timeout, 0.0)
        # Buffered jobs have not started: hand them back at once, attempt uncounted.
        for lane in self._lanes.values():
            with lane.ready:
                lane.closing = True
                unstarted = list(lane.buffer)
                lane.buffer.clear()
                lane.ready.notify_all()
                lane.watch.notify_all()
            with ledger.lock:
                for record, _ in unstarted:
                    ledger.held.pop(record.id, None)
            self._hand_back([(record.id, token) for record, token in unstarted], end, False)
            hooks = self.config.hooks
            if hooks:
                for record, _ in unstarted:
                    hooks.released(record)
        while self._busy() and time.monotonic() < end and not self._hurry.is_set():
            self._wake.wait(min(0.05, max(end - time.monotonic(), 0.0)))
            self._wake.clear()
        self._await_claims(max(end - time.monotonic(), 0.0) + CLAIM_GRACE)
        unwritten: set[str] = set()
        if self._acker is not None:
            # Successes first: a job whose success is still queued must not be released.
            unwritten = self._acker.close(timeout=max(end - time.monotonic(), 0.0) + RELEASE_GRACE)
        with ledger.lock:
            unfinished = [item for item in ledger.held.items() if item[0] not in unwritten]
            ledger.held.clear()
        self._hand_back(unfinished, end, True)
        if self._aio is not None:
            self._aio.close(timeout=max(end + RELEASE_GRACE - time.monotonic(), 0.1))
        for thread in self._threads:
            thread.join(timeout=min(2.0, max(end + RELEASE_GRACE - time.monotonic(), 0.1)))
        if not self._unreachable:  # a store that failed releases would make each write wait
            self._observer.close()
        self.config.hooks.process_stopped(self.config.node)

    def _hand_back(self, items: list[tuple[str, str]], end: float, running: bool) -> None:
        """Release ``items`` once each, until the deadline or the first storage error."""
        for done, (job_id, token) in enumerate(items):
            left = len(items) - done
            if self._unreachable or time.monotonic() > end + RELEASE_GRACE:
                log.error(
                    "stopping: %d held jobs not released (%s); they run again once "
                    "their leases expire",
                    left,
                    "the storage failed" if self._unreachable else "out of time",
                )
                return
            try:
                released = self.storage.release(job_id, token)
            except Exception as exc:
                self._unreachable = True
                log.error(
                    "stopping: releasing job %s failed (%s); not trying the other %d: "
                    "they run again once their leases expire",
                    job_id,
                    exc,
                    left - 1,
                )
                return
            if released and running:
                log.warning(
                    "job %s did not finish within the stop timeout; released",
                    job_id,
                    extra={"job_id": job_id},
                )
                self._report_released(job_id)

    def _report_released(self, job_id: str) -> None:
        hooks = self.config.hooks
        if not hooks:
            return
        try:
            record = self.storage.get(job_id)
        except Exception as exc:
            log.warning("reading released job %s for the middlewares failed (%s)", job_id, exc)
            return
        if record is not None:
            hooks.released(record)

    def _await_claims(self, patience: float) -> None:
        """Wait for claims in flight: one that returns now releases its jobs (lane closed)."""
        give_up = time.monotonic() + patience
        for lane in self._lanes.values():
            wait = 0.0 if self._hurry.is_set() else max(give_up - time.monotonic(), 0.0)
            if lane.claim_lock.acquire(timeout=wait):
                lane.claim_lock.release()
            else:
                log.warning("a claim for %s did not return in time", lane.worker.name)

    def drain(self, timeout: float | None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        ledger = self._ledger
        # A drain ends when nothing is runnable, so it needs no wake-up listener.
        self._open(listen=False)
        try:
            while deadline is None or time.monotonic() < deadline:
                self._wake.clear()
                with ledger.lock:
                    progress_before = ledger.progress
                claimed, failed = self._claimer.dispatch()
                if claimed:
                    continue
                if failed:  # not drained while a lane cannot claim; it backs off alone
                    self._wake.wait(5 * MIN_POLL)
                    continue
                # Done only if no job finished since this claim round began: a job
                # that finished meanwhile may have made another runnable (a serial
                # successor, a retry with no delay, a job it enqueued).
                with ledger.lock:
                    settled = ledger.progress == progress_before
                if settled and not self._busy():
                    # A job that ended after this round's claim looked at its lane
                    # (slots still taken) and before the idle check freed a slot the
                    # round never saw: one more claim, with every slot free, settles it.
                    claimed, failed = self._claimer.dispatch()
                    if claimed or failed:
                        continue
                    self._expire_quietly()  # jobs that expired while the drain ran
                    break
                self._wake.wait(0.5)
        finally:
            self.stop(timeout=0 if deadline is None else max(deadline - time.monotonic(), 0))
        return ledger.finished

    def _expire_quietly(self) -> None:
        if self._ledger.skewed.is_set():
            return
        try:
            self._leases.expire()
        except Exception as exc:
            log.warning("burying expired jobs failed (%s: %s)", type(exc).__name__, exc)

    def _starved(self) -> bool:
        """Whether a lane wants jobs that its own threads will not claim (the acker asks).

        Read without the lanes' locks: a wrong answer costs one wake-up of the
        dispatcher too many, or one left to the acker's next write or the poll.
        """
        for lane in self._lanes.values():
            if not lane.more_waiting and lane.wanted() > 0:
                return True
        return False

    def _wanting(self) -> bool:
        """Whether any lane wants jobs now (the acker asks; read without the lanes' locks)."""
        return any(lane.wanted() > 0 for lane in self._lanes.values())

    def _busy(self) -> bool:
        if self._acker is not None and self._acker.busy():
            return True
        for lane in self._lanes.values():
            with lane.lock:  # a job moves from buffer to executing under this lock
                if lane.executing or lane.buffer or lane.claiming:
                    return True
        return False

    # -- threads ---------------------------------------------------------------------

    def _lane_loop(self, lane: Lane) -> None:
        no_wakeup_preemption()
        ready = lane.ready
        wake = self._wake
        ledger = self._ledger
        claim_here = self._claimer.claim_here
        own = self._tally.own() if self._tally is not None else None
        # Successes of a short-job lane that this thread writes with the lane's next
        # claim, once the batch it runs is done (see ``JobRunner._conclude``).
        kept: list[tuple[str, str]] | None = [] if lane.keeps else None
        with ready:
            while True:
                while not lane.buffer and not lane.closing:
                    if claim_here(lane):
                        continue
                    if lane.watcher or not lane.short():
                        lane.waiting += 1
                        ready.wait()
                        lane.waiting -= 1
                        continue
                    # A short-job lane wakes one thread per batch (see SHORT_JOB); one
                    # idle thread looks at the buffer now and then while the lane
                    # runs jobs, so none waits long behind an unexpectedly slow one.
                    timed = lane.executing > 0
                    lane.watcher = WATCHING if timed else WATCH_IDLE
                    lane.watch.wait(SHORT_RECHECK if timed else None)
                    lane.watcher = NO_WATCHER
                if not lane.buffer:
                    return
                record, token = lane.buffer.popleft()
                lane.executing += 1
                if lane.buffer:
                    lane.rouse_watcher()  # a job waits behind this one
                ready.release()
                started = time.monotonic()
                deferred = abandoned = False
                try:
                    if kept and record.timeout is not None:
                        # A job past its timeout may leave its thread abandoned: the
                        # successes this thread kept must not be stranded with it.
                        self._write_kept(lane, kept, claim=False)
                    deferred = self._execute(lane, record, token, own, kept)
                except _Abandoned:
                    # The watchdog recorded the job, freed its slot and started a fresh
                    # thread: this one, back from its C call, counts nothing and ends.
                    abandoned = True
                finally:
                    if not abandoned:
                        # Count the job as finished before the lane looks idle, so a
                        # drain that sees an idle lane also sees this job's completion.
                        with ledger.lock:
                            if not deferred:  # a queued success keeps its lease until written
                                ledger.held.pop(record.id, None)
                            ledger.finished += 1
                            ledger.progress += 1
                        # Finishing and taking the next job share one hold of the lock.
                        ready.acquire()
                        ran = time.monotonic() - started
                        if kept and (
                            not lane.buffer
                            or lane.closing
                            or len(kept) >= lane.worker.concurrency
                            or not lane.short()
                        ):
                            # Written while the job still counts as executing, so that a
                            # drain never sees the lane idle with a success unwritten.
                            ready.release()
                            try:
                                self._write_kept(lane, kept)
                            finally:
                                ready.acquire()
                        lane.executing -= 1
                        lane.observe(ran)
                if abandoned:
                    ready.acquire()  # the ``with`` releases it
                    return
                # The dispatcher needs waking only when this lane wants jobs that
                # its own threads will not claim.
                if not lane.more_waiting and not wake.is_set() and lane.wanted():
                    wake.set()

    def _dispatch_loop(self) -> None:
        no_wakeup_preemption()
        idle = MIN_POLL
        poll_interval = self.config.poll_interval
        while not self._stopping.is_set():
            self._wake.clear()
            claimed, failed = self._claimer.dispatch()
            if claimed:
                idle = MIN_POLL
                continue
            wait = poll_interval if self._listening else idle
            # A failing lane is retried after its own pause, not the idle poll.
            woken = self._wake.wait(min(wait, 5 * MIN_POLL) if failed else wait)
            idle = MIN_POLL if woken else min(idle * 2, poll_interval)

    def _listen_loop(self) -> None:
        assert isinstance(self.storage, SupportsWakeup)
        while not self._stopping.is_set():
            try:
                if self.storage.wait_for_jobs(min(1.0, self.config.poll_interval)):
                    self._wake.set()
            except Exception as exc:
                log.warning("waiting for new jobs failed (%s); retrying in 1s", exc)
                self._stopping.wait(1.0)

    def interrupt(self, job_id: str) -> bool:
        """Stop the running job ``job_id`` (cancelled): cancel its task or raise in its thread."""
        if self._aio is not None and self._aio.cancel(job_id):
            return True
        return self._watchdog.interrupt(job_id)

    def _async_finished(self, done: list[tuple[Lane, JobRecord, bool, float]]) -> None:
        """Async jobs' outcomes are recorded: free their slots (on a finisher thread)."""
        if not done:
            return
        ledger = self._ledger
        with ledger.lock:
            for _, record, deferred, _ in done:
                if not deferred:  # a queued success keeps its lease until written
                    ledger.held.pop(record.id, None)
            ledger.finished += len(done)
            ledger.progress += 1
        now = time.monotonic()
        wanted = 0
        for lane in {id(lane): lane for lane, _, _, _ in done}.values():
            mine = [started for other, _, _, started in done if other is lane]
            with lane.ready:  # notified below
                lane.executing -= len(mine)
                for started in mine:
                    lane.observe(now - started)
                free = lane.worker.concurrency - lane.executing
                # Wake the feeder only when it has work: buffered jobs or a claim's worth of slots.
                if (
                    lane.buffer
                    or free >= claim_batch(lane.worker.concurrency)
                    or not lane.executing
                ):
                    lane.ready.notify()
                if not lane.more_waiting:
                    wanted += lane.wanted()
        if wanted and not self._wake.is_set():
            self._wake.set()

    def _abandon(self, watch: Watch) -> None:
        """A thread job did not stop after its timeout: record it failed, free its slot."""
        record, lane = watch.record, watch.lane
        assert record is not None and record.timeout is not None  # only timed jobs fire
        log.error(
            "job %s (%s) did not stop %gs after its timeout; its thread is abandoned",
            record.id,
            record.worker,
            self._watchdog.grace,
        )
        hooks = self.config.hooks
        if hooks:
            hooks.timed_out(record, float(record.timeout))
        try:
            self._recorder.failure(lane.worker, record, watch.token, timed_out(record.timeout))
        except Exception:
            log.exception("recording the timeout of job %s failed", record.id)
        ledger = self._ledger
        with ledger.lock:
            ledger.held.pop(record.id, None)
            ledger.finished += 1
            ledger.progress += 1
            self.abandoned += 1
            abandoned = self.abandoned
        with lane.ready:
            lane.executing -= 1
            closing = lane.closing
        if not closing:
            self._lane_thread(lane)
        self._wake.set()
        if self.on_abandoned is not None:
            self.on_abandoned(abandoned)
