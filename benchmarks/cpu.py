"""CPU seconds used by a worker process and its children, from ``/proc`` (Linux).

The cost a user pays for a worker is the CPU of the process they start and of
every process it starts (a supervisor's children, a prefork pool), so this sums
``utime + stime`` over the live process tree, plus ``cutime + cstime`` (children
already exited and reaped). Resolution is one clock tick (10 ms at 100 Hz).
"""

from __future__ import annotations

import os

_TICK = os.sysconf("SC_CLK_TCK")


_HAS_CHILDREN_FILE = os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def _children(pid: int) -> list[int]:
    if not _HAS_CHILDREN_FILE:  # a kernel without CONFIG_PROC_CHILDREN: scan every process
        return [p for p in _all_pids() if _parent(p) == pid]
    found: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(c) for c in f.read().split())
    except (FileNotFoundError, ProcessLookupError):
        pass
    return found


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` from field 3 on (the name may hold spaces)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return []


def _parent(pid: int) -> int:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else 0


def tree(pid: int) -> list[int]:
    """``pid`` and every live descendant."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(_children(p))
    return pids


def _ticks(pid: int) -> int:
    # utime, stime, cutime, cstime are fields 14 to 17.
    return sum(int(v) for v in _stat_fields(pid)[11:15])


def seconds(pid: int, pids: list[int] | None = None) -> float:
    """CPU seconds of ``pid`` and its descendants so far (or of ``pids``, a tree found
    earlier: finding it reads a file per thread, too much to do every few ms)."""
    return sum(_ticks(p) for p in (pids if pids is not None else tree(pid))) / _TICK
