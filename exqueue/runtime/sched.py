"""How the OS schedules the runtime's threads: woken threads do not preempt their waker.

A claim hands its jobs to sleeping job threads one wake-up each, while the
thread that claimed holds the GIL. Under Linux's default policy a thread just
woken usually preempts its waker on the same CPU, finds the GIL held, and
sleeps again: two more context switches per wake-up, with the GIL held by a
thread that is not running. Under ``SCHED_BATCH`` a woken thread waits for its
turn instead (same CPU share, same nice value; only wake-up preemption goes).
Redis, one worker process, no-op jobs at 8 threads: involuntary switches per job
1.3-1.5 -> 0.2-0.3, worker CPU per job about a third lower.

The price: a job thread woken from its own waits (a sleep, a socket) no longer
preempts either, so on a machine whose CPUs are busy with other processes it
waits for their time slice. There, 10 ms sleep jobs at 64 threads went from
81-82 % to 71-76 % of their limit. Hence opt-in, with ``EXQUEUE_SCHED_BATCH=1``
in the worker's environment (read as each thread starts), until measured on
quiet machines. Threads and processes that a job starts inherit the policy, as
Linux does (``SCHED_RESET_ON_FORK`` resets only real-time policies).
"""

from __future__ import annotations

import os

#: The environment variable that turns it on ("1").
ENV = "EXQUEUE_SCHED_BATCH"


def no_wakeup_preemption() -> None:
    """Put the calling thread under ``SCHED_BATCH`` where the OS has it (Linux),
    if ``$EXQUEUE_SCHED_BATCH`` is "1".

    Only from the default policy: a thread the user made real-time, or already
    batch or idle, is left as it is. Silently nothing where the call is refused.
    """
    if os.environ.get(ENV) != "1":
        return
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            return
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or a sandbox that refuses it
        pass
