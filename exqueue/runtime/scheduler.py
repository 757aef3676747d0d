"""The scheduler: fires the due ticks of a queue's schedules, on every node, leaderless.

Every worker process runs one scheduler thread (unless the node opted out:
``Queue(run_schedules=False)``, ``exqueue worker --no-schedules``). Each pass
reads the stored schedule states in one call, works out each registered
schedule's latest due tick (see :mod:`exqueue.schedules`) and offers it to the
store's atomic ``fire``; when several nodes offer the same tick, the store lets
exactly one through. Only schedules registered in this process's code are ever
fired, so a schedule removed or renamed in the code stops (its stored state
stays, shown as not registered). A pass sleeps until the next tick, at most
``poll_interval``, so a moved test clock is noticed quickly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from exqueue.schedules import Schedule
from exqueue.storage import NewJob, SupportsSchedules

log = logging.getLogger("exqueue")

#: The shortest sleep between two passes (a tick due "now" by a hair is fired next pass).
MIN_WAIT = 0.005

#: The longest pause between two passes while the store keeps failing.
FAILURE_PAUSE = 5.0

#: Builds the job of one tick: (schedule, tick, missed ticks, now) -> job.
MakeJob = Callable[[Schedule, float, int, float], NewJob]


class Scheduler:
    """One process's view of its queue's schedules; :meth:`run_pass` fires what is due."""

    def __init__(
        self,
        storage: SupportsSchedules,
        schedules: Mapping[str, Schedule],
        make_job: MakeJob,
        clock: Callable[[], float],
    ) -> None:
        self.storage = storage
        self.schedules = schedules
        self.make_job = make_job
        self.clock = clock
        # When this process first saw a schedule without a stored tick: its ticks
        # before then are not due (a new schedule does not fire for the past).
        self._baseline: dict[str, float] = {}
        self._lock = threading.Lock()

    def run_pass(self) -> tuple[list[str], float | None]:
        """Fire every schedule's latest due tick; the ids stored and the next tick ahead."""
        with self._lock:  # a test's fire_schedules() and the thread take turns
            now = self.clock()
            states = {state.name: state for state in self.storage.schedules()}
            fired: list[str] = []
            ahead: float | None = None
            for schedule in list(self.schedules.values()):
                state = states.get(schedule.name)
                last = state.last_tick if state is not None else None
                after = last if last is not None else self._baseline.setdefault(schedule.name, now)
                latest, count = schedule.due(after, now)
                if latest is not None:
                    job = self.make_job(schedule, latest, count - 1, now)
                    if self.storage.fire(schedule.name, latest, job):
                        fired.append(job.id)
                        if count > 1:
                            log.warning(
                                "schedule %s: %d missed ticks before %s (missed=%s)",
                                schedule.name,
                                count - 1,
                                latest,
                                schedule.missed,
                            )
                    after = latest
                coming = schedule.next_after(max(after, now))
                ahead = coming if ahead is None else min(ahead, coming)
            return fired, ahead

    def loop(
        self,
        stopping: threading.Event,
        skewed: threading.Event,
        wake: Callable[[], None],
        poll_interval: float,
    ) -> None:
        """Run passes until ``stopping``; none while this node's clock is off (``skewed``).

        A failing store is retried with a growing pause (up to ``FAILURE_PAUSE``),
        logged once when it starts failing and once when it works again.
        """
        failures = 0
        while not stopping.is_set():
            wait = poll_interval
            if not skewed.is_set():
                try:
                    fired, ahead = self.run_pass()
                except Exception as exc:
                    # The next pass tries again: a tick not recorded is still due then.
                    if failures == 0:
                        log.warning(
                            "firing schedules failed (%s: %s); retrying", type(exc).__name__, exc
                        )
                    failures += 1
                    wait = min(max(poll_interval, MIN_WAIT) * 2 ** min(failures, 10), FAILURE_PAUSE)
                else:
                    if failures:
                        log.warning("firing schedules works again after %d failures", failures)
                        failures = 0
                    if fired:
                        wake()
                    if ahead is not None:
                        wait = min(max(ahead - self.clock(), MIN_WAIT), poll_interval)
            stopping.wait(wait)
