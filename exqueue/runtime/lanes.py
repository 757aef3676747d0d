"""Lanes and claiming: each worker type's buffer of claimed jobs, and who fills it.

A lane is one worker type on this node: ``concurrency`` job threads take jobs
from its buffer. The :class:`Claimer` fills buffers with ``Storage.claim``, on
the dispatcher's thread for every lane, or on a job thread whose lane ran dry
while more jobs were waiting; or, where the storage can (``FINISH_AND_CLAIM``),
with the claim that a job thread makes in the same call as its success.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from exqueue.errors import ConfigurationError
from exqueue.runtime.config import Ledger, NodeConfig
from exqueue.storage import (
    FINISH_AND_CLAIM,
    FINISH_IN_PARALLEL,
    FinishAndClaim,
    JobRecord,
    LimitedClaim,
    Limits,
    SupportsFinishAndClaim,
    SupportsLimits,
)

if TYPE_CHECKING:
    from exqueue.queue import WorkerType

log = logging.getLogger("exqueue")

#: A lane buffers about this many seconds of work beyond its running jobs.
BUFFER_SECONDS = 0.1
#: The longest pause before a lane whose claims keep failing tries again.
MAX_CLAIM_PAUSE = 10.0
#: A thread lane whose jobs take less than this on average (a no-op, a dict
#: update) runs a claimed batch on the one thread the claim wakes (or on the
#: claiming thread itself): waking a thread per job costs more than the job, and
#: under the GIL the others could not run them sooner anyway.
SHORT_JOB = 50e-6
#: How often an idle thread of such a lane looks at the buffer while the lane
#: runs jobs: what a job waits, at most, behind an unexpectedly long one.
SHORT_RECHECK = 0.005
#: An async lane's claim takes at most a quarter of its slots (``ASYNC_CLAIM_SHARE``),
#: and never fewer than ``ASYNC_CLAIM_MIN`` jobs: its first jobs start while the next
#: claim is on its way. Claims of a thousand made every job of one wait for its last
#: row, so a lane of a thousand coroutines ran in waves (all sleeping, then all being
#: written and claimed) and the store and the loop took turns.
ASYNC_CLAIM_SHARE = 4
ASYNC_CLAIM_MIN = 100
#: ``Lane.watcher``: no watcher; one on a timed wait; one waiting for the lane to
#: get work (it was idle), which the first thread to leave a job behind wakes.
NO_WATCHER, WATCHING, WATCH_IDLE = 0, 1, 2


class Lane:
    """One worker type on this node: its claimed-but-not-started jobs and its threads.

    ``concurrency`` threads take jobs from ``buffer``; the dispatcher refills it.
    A lane buffers at most about ``BUFFER_SECONDS`` of work beyond its running
    jobs (measured from recent job durations), so a node never hoards jobs that
    other nodes could start sooner, and a buffered lease never runs out unused.
    """

    def __init__(self, worker: WorkerType[Any, Any], max_prefetch: int) -> None:
        self.worker = worker
        self.buffer: deque[tuple[JobRecord, str]] = deque()
        # ``lock`` is ``ready``'s own lock: ``with lane.lock`` where nothing waits or
        # notifies skips the Condition's Python-level ``__enter__``/``__exit__``.
        self.lock = threading.Lock()
        self.ready = threading.Condition(self.lock)
        self.executing = 0
        self.closing = False
        # One claim at a time per lane, by the dispatcher or by one of its threads.
        self.claim_lock = threading.Lock()
        self.claiming = False  # a job thread is claiming (under ``ready``)
        self.more_waiting = False  # the last claim came back full
        self.max_prefetch = 0 if worker.serial else max_prefetch
        #: The most jobs one claim takes for the lane (see ASYNC_CLAIM_SHARE).
        self.claim_most = worker.concurrency + self.max_prefetch
        if worker.is_async:
            self.claim_most = max(worker.concurrency // ASYNC_CLAIM_SHARE, ASYNC_CLAIM_MIN)
        # None until a job has finished here: a process that dies on its first job
        # (a poison job) must not take innocent buffered jobs' attempts with it.
        self.mean_duration: float | None = None
        # A lane whose claims fail backs off alone: other worker types go on.
        self.failures = 0
        self.retry_at = 0.0
        #: Its job threads claim with their successes (``Claimer.finish``): set by the Claimer.
        self.finishes = False
        #: Its threads, when its jobs are short, keep their successes until their batch
        #: is done and write them with the lane's next claim: set by the runtime.
        self.keeps = False
        #: The one idle thread of a short-job lane that looks at the buffer now and
        #: then (``SHORT_RECHECK``) waits on ``watch``, not ``ready``; ``watcher``
        #: says whether there is one and whether its wait is timed.
        self.watch = threading.Condition(self.lock)
        self.watcher = NO_WATCHER
        #: Job threads waiting on ``ready`` (under ``lock``).
        self.waiting = 0
        #: Jobs being claimed for the lane right now (under ``lock``): counted as
        #: outstanding, so claims that run at once never take more than it wants.
        self.reserved = 0
        #: Job threads of a parallel lane in ``Claimer.finish`` (under ``lock``): their
        #: slots count as free, their claims as ``reserved``.
        self.finishing = 0
        #: Its job threads each write their own success with a claim for their slot,
        #: at the same time (``Claimer.finish``): set by the Claimer.
        self.parallel = False

    def claim_failed(self, exc: Exception) -> None:
        """Note a failed claim (``claim_lock`` held): back off, doubling, up to a limit."""
        self.failures += 1
        self.more_waiting = False
        pause = min(0.1 * 2**self.failures, MAX_CLAIM_PAUSE)
        self.retry_at = time.monotonic() + pause
        log.warning(
            "claiming jobs of %s failed (%s); retrying in %.1fs", self.worker.name, exc, pause
        )

    def prefetch(self) -> int:
        if self.max_prefetch == 0 or self.mean_duration is None:
            return 0
        return min(self.max_prefetch, int(BUFFER_SECONDS / max(self.mean_duration, 1e-6)))

    def wanted(self, finishing: int = 0) -> int:
        """How many jobs to claim now: 0 unless the lane is worth a round trip.

        ``finishing``: running jobs whose slots count as free (their thread is
        recording their success and claims with it).
        """
        outstanding = self.executing - finishing - self.finishing + len(self.buffer) + self.reserved
        prefetch = self.prefetch()
        want = self.worker.concurrency + prefetch - outstanding
        # Refill in batches, but never leave a thread idle.
        if outstanding < self.worker.concurrency or want > prefetch // 2:
            return max(want, 0)
        return 0

    def short(self) -> bool:
        """Whether this thread lane's jobs are so short that one thread runs a batch."""
        mean = self.mean_duration
        return mean is not None and mean < SHORT_JOB and not self.worker.is_async

    def rouse_watcher(self) -> None:
        """Wake the watcher if it waits for the lane to get work (``lock`` held):
        from now on it looks at the buffer every ``SHORT_RECHECK``."""
        if self.watcher == WATCH_IDLE:
            self.watcher = WATCHING  # so that it is woken once
            self.watch.notify()

    def observe(self, seconds: float) -> None:
        if self.mean_duration is None:
            self.mean_duration = seconds
        else:
            self.mean_duration = 0.8 * self.mean_duration + 0.2 * seconds


class Claimer:
    """Claims jobs into lanes' buffers and notes them in the ledger.

    A claim that returns after its lane closed (the node is stopping) hands
    its jobs back at once through ``release``, attempt uncounted.
    """

    def __init__(
        self,
        config: NodeConfig,
        ledger: Ledger,
        lanes: dict[str, Lane],
        release: Callable[[str, str], bool],
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.lanes = lanes
        self.release = release
        self.wake = ledger.wake
        self.stopping = ledger.stopping
        storage = config.storage
        #: The storage, where a success and a claim go in one call (FINISH_AND_CLAIM).
        self.both: SupportsFinishAndClaim | None = None
        #: Whether the acker has successes to write (set by the runtime; see ``claim_here``).
        self.writes_soon: Callable[[], bool] | None = None
        #: The one lane whose threads claim with successes, if only one does.
        self.sole: Lane | None = None
        if FINISH_AND_CLAIM in storage.capabilities and isinstance(storage, SupportsFinishAndClaim):
            self.both = storage
            for lane in lanes.values():
                # A limited claim is another call (claim_limited); async lanes
                # write their successes from the finisher, not a job thread.
                lane.finishes = lane.worker.limits is None and not lane.worker.is_async
            finishing = [lane for lane in lanes.values() if lane.finishes]
            self.sole = finishing[0] if len(finishing) == 1 else None
            if FINISH_IN_PARALLEL in storage.capabilities:
                for lane in finishing:
                    # A serial type claims its head in a transaction, one at a time.
                    lane.parallel = lane.worker.concurrency > 1 and not lane.worker.serial

    def dispatch(self) -> tuple[int, bool]:
        """Claim for every lane that wants jobs: (how many were claimed, whether any lane failed).

        Each lane is claimed for alone: one whose claim raises backs off while
        the others go on.
        """
        claimed = 0
        failed = False
        now = time.monotonic()
        if self.ledger.skewed.is_set():
            return 0, True  # the clocks disagree: a claim would take the wrong jobs
        writes_soon = self.writes_soon
        for lane in self.lanes.values():
            if self.stopping.is_set():
                break
            if lane.retry_at > now:
                failed = True
                continue
            if (
                lane.keeps
                and lane.more_waiting
                and lane.short()
                and (lane.executing or lane.buffer)
            ):
                # Its running thread claims with its batch's successes (read without the
                # lock: a stale answer leaves the claim to the thread, or to the next round).
                continue
            if lane is self.sole and writes_soon is not None and writes_soon():
                # The acker's next write claims for it with its successes (finish_any):
                # a claim of the dispatcher's beside it would make it a plain write, two
                # round trips instead of one (64 threads, 10 ms jobs: 0.52 calls per
                # job). Its last write wakes the dispatcher again.
                continue
            with lane.claim_lock:
                try:
                    claimed += self.claim(lane)
                except Exception as exc:
                    lane.claim_failed(exc)
                    failed = True
                else:
                    lane.failures = 0
        return claimed, failed

    def claim(self, lane: Lane, taker: bool = False) -> int:
        """Claim what ``lane`` wants into its buffer (``lane.claim_lock`` held).

        ``taker``: the caller is one of the lane's threads and takes a job itself,
        so one thread fewer is woken for the claimed jobs.
        """
        # Only a parallel lane's claims can run at once (``finish``); elsewhere
        # ``claim_lock`` keeps them one at a time, and a hot lane's lock is best
        # taken once (256 threads: the extra holds cost throughput).
        reserve = lane.parallel
        with lane.lock:
            want = min(lane.wanted(), lane.claim_most)
            if want <= 0:
                return 0
            if reserve:
                lane.reserved += want
        if not reserve:
            return self._claim(lane, want, taker)
        try:
            return self._claim(lane, want, taker)
        finally:
            with lane.lock:
                lane.reserved -= want

    def _claim(self, lane: Lane, want: int, taker: bool) -> int:
        """Claim ``want`` jobs for ``lane`` and hand them out; how many."""
        config = self.config
        now = config.clock()
        token = os.urandom(16).hex()  # as random as uuid4().hex, at a fraction of the cost
        limits = lane.worker.limits
        if limits is None:
            records = config.storage.claim(
                lane.worker.name,
                want,
                now=now,
                owner=config.node,
                token=token,
                lease_until=now + config.lease,
                serial=lane.worker.serial,
            )
        else:
            records = self.claim_limited(lane, want, now, token, limits.storage_limits)
        return self._hand_out(lane, records, want, token, taker)

    def _hand_out(
        self, lane: Lane, records: list[JobRecord], want: int, token: str, taker: bool
    ) -> int:
        """Put claimed ``records`` in ``lane``'s buffer (``lane.claim_lock`` held); how many."""
        # A full claim suggests more are waiting: the lane's threads then claim
        # for themselves when they run dry, without a round of the dispatcher.
        # A limited claim that came back short leaves the lane to the dispatcher's
        # poll and wake-ups, so a full limit never makes the lane spin on the store.
        lane.more_waiting = len(records) == want
        if not records:
            return 0
        ledger = self.ledger
        with ledger.lock:
            for record in records:
                ledger.held[record.id] = token
        with lane.lock:
            # ``stop`` closes the lane and empties its buffer under this lock: a
            # claim that returns after that releases its jobs itself.
            closing = lane.closing
            if not closing:
                lane.buffer.extend((record, token) for record in records)
                if not lane.short():
                    woken = len(records) - taker
                    if woken:
                        lane.ready.notify(woken)
                elif not taker:
                    # A batch of short jobs goes to one thread (see SHORT_JOB): one
                    # waiting on ``ready``, or else the watcher, when it waits for
                    # the lane to get work (no other thread is idle to take it).
                    if lane.waiting:
                        lane.ready.notify()
                    else:
                        lane.rouse_watcher()
        if closing:
            with ledger.lock:
                for record in records:
                    ledger.held.pop(record.id, None)
            for record in records:
                self.release(record.id, token)
            return 0
        return len(records)

    def finish(
        self, lane: Lane, done: list[tuple[str, str]], finishing: int = 1
    ) -> list[str] | None:
        """Record the successes ``done`` and claim for ``lane`` in one call; the ids
        completed, or None when the caller is to write the successes as usual.

        ``finishing``: 1 when the caller is a job thread of ``lane`` writing its own
        success (its slot counts as free, and it takes one of the claimed jobs
        itself), 0 for the acker, whose successes' slots are free already.
        Only when the lane wants jobs (``prefetch=0`` is kept: the slots claimed for
        are free ones), for a job thread only when the lane's buffer is empty (it
        takes its next job from there), and when no one else is claiming for it,
        except on a parallel lane, whose job threads claim side by side with
        their claims reserved (``Lane.reserved``). A failed call counts as a failed
        claim (the lane backs off) and returns None: the caller's usual write then
        retries the successes, so a success is never dropped with the claim.
        """
        storage = self.both
        if (
            storage is None
            or (finishing and lane.buffer)  # the thread takes its next job from there
            or self.stopping.is_set()
            or self.ledger.skewed.is_set()
            or lane.retry_at > time.monotonic()
        ):
            return None
        # A parallel lane's job threads claim side by side, each for its own slot.
        alone = not (finishing and lane.parallel)
        if alone and not lane.claim_lock.acquire(blocking=False):
            return None
        reserve = lane.parallel  # see ``claim``
        want = 0
        counted = 0
        try:
            with lane.lock:
                if not alone:
                    lane.finishing += 1
                    counted = 1
                want = 0 if lane.closing else lane.wanted(finishing - counted)
                if want <= 0:
                    return None
                if reserve:
                    lane.reserved += want
            config = self.config
            now = config.clock()
            token = os.urandom(16).hex()
            request = FinishAndClaim(
                done,
                lane.worker.name,
                want,
                now,
                config.node,
                token,
                now + config.lease,
                lane.worker.serial,
            )
            try:
                finished = storage.finish_and_claim(request)
            except Exception as exc:
                lane.claim_failed(exc)  # the dispatcher retries once the lane's pause is over
                self.wake.set()
                return None
            lane.failures = 0
            # A job thread takes one itself once its job is counted as finished.
            self._hand_out(lane, finished.claimed, want, token, finishing > 0)
            return finished.completed
        finally:
            if (reserve and want > 0) or counted:
                with lane.lock:
                    if reserve:
                        lane.reserved -= max(want, 0)
                    lane.finishing -= counted
            if alone:
                lane.claim_lock.release()

    def finish_any(self, done: list[tuple[str, str]]) -> tuple[list[str], bool] | None:
        """``finish`` for the acker: its batch ``done`` with a claim for the lane that
        wants the most jobs now; the ids completed and whether the claim came back
        full (None: written by no one, the caller writes it).

        The lanes are read without their locks: a stale answer only picks a lane
        whose claim ``finish`` then finds not wanted, or leaves the claim to the
        lane's own threads and the dispatcher, as without it.
        """
        best: Lane | None = None
        most = 0
        for lane in self.lanes.values():
            if lane.finishes:
                want = lane.wanted()
                if want > most:
                    best, most = lane, want
        if best is None:
            return None
        completed = self.finish(best, done, finishing=0)
        return None if completed is None else (completed, best.more_waiting)

    def claim_limited(
        self, lane: Lane, want: int, now: float, token: str, limits: Limits
    ) -> list[JobRecord]:
        """``claim_limited`` for a worker type with cluster-wide limits."""
        config = self.config
        storage = config.storage
        if not isinstance(storage, SupportsLimits):
            raise ConfigurationError(
                f"{lane.worker.name} has limits, and {type(storage).__name__} has no "
                "claim_limited (capability 'limits')"
            )
        request = LimitedClaim(
            lane.worker.name, want, now, config.node, token, now + config.lease, limits
        )
        return storage.claim_limited(request)

    def claim_here(self, lane: Lane) -> bool:
        """A job thread whose lane ran dry claims for it (``lane.ready`` held).

        Only when the last claim came back full, and only if no one else is
        claiming for the lane; the dispatcher stays in charge of idle lanes,
        polling and wake-ups. Saves two thread hand-offs per claim.
        """
        if not lane.more_waiting or self.stopping.is_set() or self.ledger.skewed.is_set():
            return False
        writes_soon = self.writes_soon
        if lane is self.sole and writes_soon is not None and writes_soon():
            # The acker's next write claims for this lane with its successes
            # (``finish_any``), after this thread's slot was freed: one round
            # trip instead of two. Its last write wakes the dispatcher, which
            # claims for the lane should that write not have.
            return False
        if not lane.claim_lock.acquire(blocking=False):
            return False
        lane.claiming = True
        lane.ready.release()
        try:
            # ``want`` is read after the release: threads that finish meanwhile are claimed for.
            if self.claim(lane, taker=True) > 0:
                return True
            self.wake.set()  # came up empty: the dispatcher (or a drain) takes over
            return False
        except Exception as exc:
            lane.claim_failed(exc)  # the dispatcher retries once the lane's pause is over
            self.wake.set()
            return False
        finally:
            lane.claim_lock.release()
            lane.ready.acquire()
            lane.claiming = False
