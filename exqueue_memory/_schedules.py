"""MemoryStorage's schedule states (capability ``SCHEDULES``).

One lock serializes every schedule call: ``fire`` checks the tick, stores the
job through the storage's own (atomic) ``enqueue`` and records the tick while
holding it, so no other ``fire`` or pause sees the tick without its job.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from exqueue.storage import NewJob, ScheduleState


class MemorySchedules:
    """Schedule states in a dict; a base class of ``MemoryStorage``."""

    def enqueue(self, jobs: Sequence[NewJob]) -> object: ...  # provided by MemoryStorage

    def _schedule_lock(self) -> threading.Lock:
        lock: threading.Lock | None = self.__dict__.get("_schedules_lock")
        if lock is None:
            lock = self.__dict__.setdefault("_schedules_lock", threading.Lock())
        return lock

    def _states(self) -> dict[str, ScheduleState]:
        states: dict[str, ScheduleState] = self.__dict__.setdefault("_schedule_states", {})
        return states

    def fire(self, schedule: str, tick: float, job: NewJob) -> bool:
        with self._schedule_lock():
            states = self._states()
            state = states.get(schedule, ScheduleState(schedule))
            if state.last_tick is not None and tick <= state.last_tick:
                return False
            if not state.paused:
                self.enqueue([job])  # raises on a duplicate id: the tick is not recorded
            states[schedule] = ScheduleState(schedule, tick, state.paused)
            return not state.paused

    def schedules(self) -> list[ScheduleState]:
        with self._schedule_lock():
            return [self._states()[name] for name in sorted(self._states())]

    def pause_schedule(self, schedule: str, paused: bool) -> None:
        with self._schedule_lock():
            states = self._states()
            state = states.get(schedule, ScheduleState(schedule))
            states[schedule] = ScheduleState(schedule, state.last_tick, bool(paused))
