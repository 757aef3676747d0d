"""Timeouts of plain (thread) jobs: raise in the job's thread, then abandon it.

A thread cannot be killed. Past its timeout a job gets :class:`JobTimeout`
raised in its thread (``PyThreadState_SetAsyncExc``), which stops any Python
code. Code stuck in C (a blocking socket read, a C extension's sleep) sees it
only when it returns to Python, so once ``grace`` seconds more have passed the
watchdog abandons the thread: it records the attempt as failed ("timed out
after N s", the retry policy applies), drops the lease, frees the slot (the
runtime starts a fresh job thread) and leaves the stuck thread to die on its
own, recording nothing when it does. Abandoned threads still hold memory and
whatever they were blocked on, so the runtime counts them (see
``Runtime.abandoned``) and a worker process under ``--processes`` is replaced
once they pile up.

Exactly one side records the outcome: the job thread settles its entry under
the watchdog's lock before recording, and the watchdog abandons only an entry
still running, under the same lock.

A job without a timeout can still be cancelled (on a storage with ``CANCEL``),
and most jobs are such. They cost no lock and no object: the job thread notes
its job id and thread in a dict (:meth:`Watchdog.enter`) and takes the note
back when done (:meth:`Watchdog.leave`). A cancel (:meth:`Watchdog.interrupt`)
takes the note first, under the lock, and only then raises; ``dict.pop`` is
atomic, so exactly one side gets the note: the job thread, which then has
nothing to settle, or the cancel, whose entry the job thread then settles.
"""

from __future__ import annotations

import ctypes
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from exqueue.errors import JobCancelled, JobTimeout
from exqueue.storage import JobRecord

#: Seconds a thread job gets, after the exception raised in it, before it is abandoned.
DEFAULT_GRACE = 5.0

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


def _raise_in(ident: int, exc: type[BaseException] | None) -> None:
    # py_object(None) is NULL to the C API: it clears a pending exception.
    _set_async_exc(ident, ctypes.py_object() if exc is None else exc)


class Watch:
    """One running thread job with a timeout, or a job without one being cancelled."""

    __slots__ = (
        "job_id",
        "record",
        "token",
        "lane",
        "ident",
        "deadline",
        "state",
        "fired",
        "cancelled",
    )

    def __init__(
        self,
        job_id: str,
        record: JobRecord | None,
        token: str,
        lane: Any,
        deadline: float,
        ident: int | None = None,
    ) -> None:
        self.job_id = job_id
        #: None for a job without a timeout (only its id and thread are known).
        self.record = record
        self.token = token
        self.lane = lane
        self.ident = threading.get_ident() if ident is None else ident
        self.deadline = deadline
        self.state = "running"  # then "done" (the thread records) or "abandoned"
        self.fired = False  # JobTimeout was raised in the thread
        self.cancelled = False  # JobCancelled was raised in the thread


class Watchdog:
    """Watches thread jobs with a timeout; calls ``abandon`` for those that will not stop."""

    def __init__(
        self, grace: float, abandon: Callable[[Watch], None], stopping: threading.Event
    ) -> None:
        self.grace = grace
        self._abandon = abandon
        self._stopping = stopping
        self._cond = threading.Condition()
        self._watches: dict[str, Watch] = {}
        #: Jobs without a timeout running in job threads: job id -> thread ident.
        #: The runtime writes and pops its notes here directly (enter/leave inline).
        self.notes: dict[str, int] = {}
        self._thread: threading.Thread | None = None

    def enter(self, job_id: str) -> None:
        """The calling thread starts ``job_id``, which has no timeout: note it for a cancel."""
        self.notes[job_id] = threading.get_ident()

    def leave(self, job_id: str) -> Watch | None:
        """The calling thread is done with ``job_id`` (see :meth:`enter`).

        None: no cancel was raised, nothing to settle. Otherwise the cancel's
        entry, for :meth:`settle`. Safe to call again after a stray
        :class:`JobCancelled` lands in the call itself.
        """
        if self.notes.pop(job_id, None) is not None:
            return None
        with self._cond:
            return self._watches[job_id]

    def watch(self, record: JobRecord, token: str, lane: Any) -> Watch:
        """Watch the calling thread's job, which has a timeout."""
        assert record.timeout is not None
        entry = Watch(record.id, record, token, lane, time.monotonic() + record.timeout)
        with self._cond:
            self._watches[record.id] = entry
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="exqueue-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return entry

    def settle(self, entry: Watch) -> bool:
        """The job thread is done with its job: True when it still owns the outcome.

        Called again after a stray :class:`JobTimeout` lands in the call itself.
        """
        with self._cond:
            if entry.state == "running":
                entry.state = "done"
                if self._watches.get(entry.job_id) is entry:
                    del self._watches[entry.job_id]
                if entry.fired or entry.cancelled:
                    _raise_in(entry.ident, None)  # one raised but not yet delivered
            return entry.state == "done"

    def interrupt(self, job_id: str) -> bool:
        """Raise :class:`JobCancelled` in the thread running ``job_id``; False when none."""
        with self._cond:
            ident = self.notes.pop(job_id, None)
            if ident is not None:
                # Taken from the job thread's note: it now settles this entry.
                noted = Watch(job_id, None, "", None, math.inf, ident)
                self._watches[job_id] = noted
                noted.cancelled = True
                _raise_in(ident, JobCancelled)
                return True
            entry = self._watches.get(job_id)
            if entry is None or entry.state != "running" or entry.fired or entry.cancelled:
                return False
            entry.cancelled = True
            _raise_in(entry.ident, JobCancelled)
            return True

    def _loop(self) -> None:
        with self._cond:
            while not self._stopping.is_set():
                now = time.monotonic()
                nearest = now + 1.0
                for entry in list(self._watches.values()):
                    if not entry.fired and now >= entry.deadline:
                        entry.fired = True
                        _raise_in(entry.ident, JobTimeout)
                    elif entry.fired and now >= entry.deadline + self.grace:
                        entry.state = "abandoned"
                        del self._watches[entry.job_id]
                        self._cond.release()
                        try:
                            self._abandon(entry)
                        finally:
                            self._cond.acquire()
                        continue
                    due = entry.deadline + (self.grace if entry.fired else 0.0)
                    nearest = min(nearest, due)
                self._cond.wait(max(nearest - time.monotonic(), 0.005))
