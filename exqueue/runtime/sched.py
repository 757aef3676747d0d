"""How the OS schedules the runtime's threads: woken threads do not preempt their waker.

A claim hands its jobs to sleeping job threads one wake-up each, while the
thread that claimed holds the GIL. Under Linux's default policy a thread just
woken usually preempts its waker on the same CPU, finds the GIL held, and
sleeps again: two more context switches per wake-up, with the GIL held by a
thread that is not running. Under ``SCHED_BATCH`` a woken thread waits for its
turn instead (same CPU share, same nice value; only wake-up preemption goes).
Redis, one worker process, no-op jobs at 8 threads: involuntary switches per job
1.3-1.5 -> 0.2-0.3, worker CPU per job about a third lower.

Threads and processes that a job starts inherit the policy, as Linux does
(``SCHED_RESET_ON_FORK`` resets only real-time policies); ``BATCH = False``
leaves every thread under the default one.
"""

from __future__ import annotations

import os

#: Whether the runtime's thread-job threads, acker and dispatcher ask for ``SCHED_BATCH``.
BATCH = True


def no_wakeup_preemption() -> None:
    """Put the calling thread under ``SCHED_BATCH`` where the OS has it (Linux).

    Only from the default policy: a thread the user made real-time, or already
    batch or idle, is left as it is. Silently nothing where the call is refused.
    """
    if not BATCH:
        return
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            return
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or a sandbox that refuses it
        pass
