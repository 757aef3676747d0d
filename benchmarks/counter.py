"""The job-side probe every benchmarked job calls: counts executions, records times.

Each process that runs jobs writes to its own small memory-mapped file in the
directory named by ``$EXQ_BENCH_COUNTER_DIR`` (one file per pid, so no lock is
shared between processes). The harness sums the files: that is how every run
verifies how many jobs really executed, whatever library or worker process ran
them, without adding a network round trip to the job.

Slot layout (little-endian): count, first start, last end, last arg, last start.
Times are ``time.perf_counter()``, which on Linux is ``CLOCK_MONOTONIC`` and so a
clock shared by every process on the machine.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
from dataclasses import dataclass

ENV = "EXQ_BENCH_COUNTER_DIR"
_SLOT = struct.Struct("<qddqd")
_lock = threading.Lock()
_state: dict[str, object] = {"pid": None, "map": None, "count": 0, "first": 0.0}


def _open() -> mmap.mmap:
    directory = os.environ.get(ENV)
    if not directory:
        raise RuntimeError(f"${ENV} is not set: the benchmark harness sets it")
    path = os.path.join(directory, f"{os.getpid()}.slot")
    with open(path, "wb") as f:
        f.write(b"\0" * _SLOT.size)
    with open(path, "r+b") as f:
        mapped = mmap.mmap(f.fileno(), _SLOT.size)
    _state.update(pid=os.getpid(), map=mapped, count=0, first=0.0)
    return mapped


def hit(n: int, started: float | None = None) -> None:
    """Record that the job with argument ``n`` ended now, having started at ``started``
    (``time.perf_counter()``; now when not given, for a no-op)."""
    now = time.perf_counter() if started is None else started
    with _lock:
        mapped = _state["map"]
        if mapped is None or _state["pid"] != os.getpid():
            mapped = _open()
        count = int(_state["count"]) + 1  # type: ignore[call-overload]
        first = float(_state["first"]) or now  # type: ignore[arg-type]
        _state["count"], _state["first"] = count, first
        _SLOT.pack_into(mapped, 0, count, first, time.perf_counter(), n, now)  # type: ignore[arg-type]


def reset_in_process(directory: str) -> None:
    """Point this process at a fresh counter directory (for jobs run in the harness)."""
    os.environ[ENV] = directory
    with _lock:
        _state.update(pid=None, map=None, count=0, first=0.0)


@dataclass(frozen=True)
class Totals:
    count: int
    first_start: float  # earliest job start over all processes (0 when none)
    last_end: float  # latest job end
    last_arg: int  # argument of the job that started last
    last_start: float


#: How many times a slot that reads as all zeros is read again (see ``_read_slot``).
ZERO_REREADS = 5
_pause = time.sleep  # between those reads (a test replaces it)


def _read_slot(path: str) -> tuple[int, float, float, int, float] | None:
    """One process's slot, or None while it is being created.

    On the machine these benchmarks were measured on (Linux 6.18, ext4), a slot that
    its process keeps writing through ``mmap`` now and then reads as all zeros,
    through ``read`` and through a mapping of its own alike (about 1 read in 200
    while a process writes it in a loop), though its writer never writes a zero
    count. Taken as it reads, one such read reset the harness's CPU baseline in the
    middle of a run (a worker's CPU per 1,000 jobs came out at 0.001 s): a slot
    that reads as zeros is read again, a millisecond apart.
    """
    for attempt in range(ZERO_REREADS + 1):
        with open(path, "rb") as f:
            data = f.read(_SLOT.size)
        if len(data) < _SLOT.size:
            return None
        slot: tuple[int, float, float, int, float] = _SLOT.unpack(data)
        if slot[0] or attempt == ZERO_REREADS:
            return slot
        _pause(0.001)
    return None  # not reached: the last attempt returns


def read(directory: str) -> Totals:
    """Sum every process's slot in ``directory``."""
    count, first, end, arg, start = 0, 0.0, 0.0, -1, 0.0
    for name in os.listdir(directory):
        if not name.endswith(".slot"):
            continue
        slot = _read_slot(os.path.join(directory, name))
        if slot is None:
            continue
        c, fs, le, la, ls = slot
        count += c
        if c:
            first = fs if not first else min(first, fs)
            end = max(end, le)
            if ls >= start:
                arg, start = la, ls
    return Totals(count, first, end, arg, start)
