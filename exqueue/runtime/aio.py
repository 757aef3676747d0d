"""Async worker types: their jobs run as coroutines on one event loop per node.

The loop runs in a thread of its own and does nothing but run job bodies. Every
storage call stays on other threads: the dispatcher (or a feeder) claims, the
heartbeat extends leases, and finisher threads record outcomes. So a job that
blocks the loop (a CPU-bound stretch, a blocking call in an async def) delays
only the other coroutines' bodies, never a claim, a heartbeat or an
acknowledgement, and no job loses its lease to it.

A feeder thread per async lane takes claimed jobs from the lane's buffer while
fewer than ``concurrency`` of its coroutines run, decodes them and builds their
job contexts (off the loop, unless a middleware's ``started`` hook must run on
the job's thread), and hands them to the loop in batches (one wake-up of the
loop per batch, not per job).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import queue
import threading
import time
from collections.abc import Callable
from types import CoroutineType
from typing import Any

from exqueue.errors import JobCancelled, JobTimeout, Snooze
from exqueue.job import JobContext, _current
from exqueue.middleware import Hooks
from exqueue.runtime.lanes import Lane
from exqueue.storage import JobRecord

log = logging.getLogger("exqueue")

#: Threads recording outcomes of async jobs: a slow failure path does not hold
#: up the others' successes. Each takes every outcome queued when it wakes, so
#: a thousand coroutines finishing together cost a few thread wake-ups, not one each.
FINISHERS = 2
#: The most outcomes a finisher takes at once.
FINISH_BATCH = 512
#: A feeder claims for itself once this share of its lane's slots is free (at
#: most ``MAX_CLAIM_BATCH`` slots): a thousand coroutines finishing one by one
#: would otherwise cost a claim round trip each.
CLAIM_SHARE = 0.05
MAX_CLAIM_BATCH = 100


def claim_batch(concurrency: int) -> int:
    """Free slots an async lane waits for before it claims more (1 for small lanes)."""
    return max(1, min(int(concurrency * CLAIM_SHARE), MAX_CLAIM_BATCH))


Prepared = tuple[tuple[Any, ...], dict[str, Any], JobContext]
#: Successes by worker type, ``[count, seconds]``, written by one thread alone
#: (see ``runtime.observe.Tally.own``).
Counter = dict[str, list[float]]
#: (lane, record, token, the attempt's exception or None, when it started)
Outcome = tuple[Lane, JobRecord, str, BaseException | None, float]


class Undecodable(Exception):
    """A job whose payload cannot be decoded: it dies without running."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


#: A claimed job on its way to the loop: (record, token, its arguments and context,
#: or why they cannot be decoded, or None when the loop is to decode them).
Starting = tuple[JobRecord, str, "Prepared | Undecodable | None"]


def timed_out(seconds: float) -> JobTimeout:
    return JobTimeout(f"timed out after {seconds:g} s")


class AsyncRunner:
    """The event loop, feeders and finishers of a node's async lanes."""

    def __init__(
        self,
        lanes: list[Lane],
        *,
        prepare: Callable[[JobRecord], Prepared],
        conclude: Callable[
            [Lane, JobRecord, str, BaseException | None, float | None, Counter | None], bool
        ],
        finished: Callable[[list[tuple[Lane, JobRecord, bool, float]]], None],
        claim_here: Callable[[Lane], bool],
        hooks: Hooks | None = None,
        counter: Callable[[], Counter] | None = None,
    ) -> None:
        self.lanes = lanes
        #: The node's hooks: with none registered, feeders decode jobs off the loop.
        self._hooks = hooks
        self._prepare = prepare
        self._conclude = conclude
        self._finished = finished
        self._claim_here = claim_here
        #: Gives each finisher a success counter of its own (lock-free, as job threads have).
        self._counter = counter
        self.loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        # Outcomes go to the finishers a loop iteration's worth at a time: one
        # put (one finisher wake-up) for every job that ended in that iteration.
        self._outcomes: queue.SimpleQueue[list[Outcome] | None] = queue.SimpleQueue()
        self._ended: list[Outcome] = []
        self._closed = False
        self._threads: list[threading.Thread] = []
        #: Tasks by job id, so a cancellation request can reach a running coroutine.
        self.running: dict[str, asyncio.Task[None]] = {}
        self._cancelled: set[str] = set()
        self._spawn(self._run_loop, "exqueue-loop")
        for number in range(FINISHERS):
            self._spawn(self._finish_loop, f"exqueue-finisher-{number}")
        for lane in lanes:
            self._spawn(functools.partial(self._feed, lane), f"exqueue-{lane.worker.name}-feeder")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    # -- feeding ---------------------------------------------------------------------

    def _feed(self, lane: Lane) -> None:
        ready = lane.ready
        limit = lane.worker.concurrency
        enough = claim_batch(limit)
        with ready:
            while True:
                while not lane.closing and (not lane.buffer or lane.executing >= limit):
                    if limit - lane.executing >= enough and self._claim_here(lane):
                        continue
                    ready.wait()
                if lane.closing:
                    return
                take = min(len(lane.buffer), limit - lane.executing)
                batch = [lane.buffer.popleft() for _ in range(take)]
                lane.executing += take
                # Decode the batch here, off the loop and with the lane unlocked: the
                # loop thread is the one every job's body waits for. The batch counts
                # as executing already, so a stop that begins meanwhile waits for it
                # to run, as for any batch handed over just before a stop.
                ready.release()
                try:
                    starting = self._prepare_batch(batch)
                finally:
                    ready.acquire()
                try:
                    self.loop.call_soon_threadsafe(self._start, lane, starting)
                except RuntimeError:  # the loop is closed: the node is stopping
                    return

    def _prepare_batch(self, batch: list[tuple[JobRecord, str]]) -> list[Starting]:
        """Each job's arguments and context, or its decoding error (None: on the loop)."""
        if self._hooks is None or self._hooks.chain:
            # A started hook runs on the thread that runs the job: the loop.
            return [(record, token, None) for record, token in batch]
        prepare = self._prepare
        starting: list[Starting] = []
        for record, token in batch:
            try:
                starting.append((record, token, prepare(record)))
            except Undecodable as bad:
                starting.append((record, token, bad))
            except Exception:  # not a payload's fault: the loop prepares it, as ever
                starting.append((record, token, None))
        return starting

    def _start(self, lane: Lane, batch: list[Starting]) -> None:
        # The Task class itself rather than loop.create_task: this loop never has a
        # task factory, and the method's checks and naming cost a call per job.
        loop, tasks, running = self.loop, self._tasks, self.running
        for record, token, prepared in batch:
            task = asyncio.Task(self._job(lane, record, token, prepared), loop=loop)
            tasks.add(task)
            running[record.id] = task

    # -- one job ---------------------------------------------------------------------

    async def _job(
        self, lane: Lane, record: JobRecord, token: str, prepared: Prepared | Undecodable | None
    ) -> None:
        # One coroutine per job, the attempt inline: each resumption of the job
        # (every await in its body) passes through one frame fewer.
        started = time.monotonic()
        error: BaseException | None = None
        try:
            if prepared is None:
                try:
                    prepared = self._prepare(record)
                except Undecodable as bad:
                    prepared = bad
            if isinstance(prepared, Undecodable):
                error = prepared
            else:
                args, kwargs, context = prepared
                _current.set(context)  # each task runs in a copy of the context
                worker = lane.worker
                try:
                    work = worker.fn(*args, **kwargs)
                    # A coroutine, nearly always: its type check is cheaper than isawaitable.
                    if type(work) is not CoroutineType and not inspect.isawaitable(work):
                        raise TypeError(
                            f"async worker type {worker.name!r} returned "
                            f"{type(work).__name__}, not an awaitable: its job was not run"
                        )
                    if record.timeout is None:
                        result = await work
                    else:
                        limit = asyncio.timeout(record.timeout)
                        try:
                            async with limit:
                                result = await work
                        except TimeoutError:
                            if not limit.expired():
                                raise
                            result, error = None, timed_out(record.timeout)
                    if isinstance(result, Snooze):
                        error = result
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:  # a job's SystemExit is a failure too, not our exit
                    error = exc
        except asyncio.CancelledError:
            if self._closed:
                return  # the node stopped: its held jobs were handed back
            if record.id in self._cancelled:
                error = JobCancelled(record.id)
            else:
                error = asyncio.CancelledError("the job's task was cancelled")
        finally:
            # Here rather than in a done callback: that would be one more loop
            # callback per job.
            self.running.pop(record.id, None)
            self._tasks.discard(asyncio.current_task(self.loop))
            if self._cancelled:
                self._cancelled.discard(record.id)
        ended = self._ended
        if not ended:
            self.loop.call_soon(self._flush)
        ended.append((lane, record, token, error, started))

    def _flush(self) -> None:
        ended, self._ended = self._ended, []
        self._outcomes.put(ended)

    # -- recording -------------------------------------------------------------------

    def _finish_loop(self) -> None:
        outcomes = self._outcomes
        own = self._counter() if self._counter is not None else None
        while True:
            first = outcomes.get()
            if first is None:
                outcomes.put(None)  # for the next finisher
                return
            items = first
            # Take what else is queued until the queue says Empty: two finishers
            # share it, so ``empty()`` then ``get_nowait()`` could race.
            stop = False
            try:
                while len(items) < FINISH_BATCH:
                    more = outcomes.get_nowait()
                    if more is None:
                        stop = True
                        break
                    items.extend(more)
            except queue.Empty:
                pass
            done: list[tuple[Lane, JobRecord, bool, float]] = []
            for lane, record, token, error, started in items:
                deferred = False
                try:
                    deferred = self._conclude(lane, record, token, error, None, own)
                except Exception:
                    log.exception("internal error while recording job %s", record.id)
                done.append((lane, record, deferred, started))
            self._finished(done)
            if stop:
                outcomes.put(None)
                return

    def cancel(self, job_id: str) -> bool:
        """Cancel the running coroutine of ``job_id`` (from any thread); False when none."""
        task = self.running.get(job_id)
        if task is None:
            return False
        self._cancelled.add(job_id)
        self.loop.call_soon_threadsafe(task.cancel)
        return True

    def close(self, timeout: float) -> None:
        """Cancel what still runs (its jobs were handed back) and stop every thread."""
        self._closed = True
        for lane in self.lanes:
            with lane.ready:
                lane.closing = True
                lane.ready.notify_all()

        def shut() -> None:
            for task in list(self._tasks):
                task.cancel()
            self.loop.call_later(0.05, self.loop.stop)

        try:
            self.loop.call_soon_threadsafe(shut)
        except RuntimeError:
            pass  # already closed
        self._outcomes.put(None)  # each finisher passes it on
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(end - time.monotonic(), 0.1))
