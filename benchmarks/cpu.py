"""CPU seconds used by a worker process and its children, from ``/proc`` (Linux).

The cost a user pays for a worker is the CPU of the process they start and of
every process it starts (a supervisor's children, a prefork pool), so this sums
``utime + stime`` over the live process tree, plus ``cutime + cstime`` (children
already exited and reaped). Resolution is one clock tick (10 ms at 100 Hz).
"""

from __future__ import annotations

import os

_TICK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(c) for c in f.read().split())
    except (FileNotFoundError, ProcessLookupError):
        pass
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and every live descendant."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(_children(p))
    return pids


def _ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    # Fields after the command name (which may hold spaces) start at field 3:
    # utime, stime, cutime, cstime are fields 14 to 17.
    fields = stat.rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15])


def seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its descendants so far."""
    return sum(_ticks(p) for p in tree(pid)) / _TICK
