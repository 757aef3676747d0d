"""The schedules area must catch broken ``fire`` implementations: a test of the checks.

Each backend here is the memory backend with one realistic violation of the
tick rule; the schedule checks must reject each (the check named for it must
be among those that fail), and pass the memory backend itself.
"""

from __future__ import annotations

import threading
import time

import pytest

from conformance import run_suite
from conformance.profiles import get_settings
from conformance.schedules import CHECKS
from exqueue.storage import NewJob, ScheduleState
from exqueue_memory import MemoryStorage

NAMES = [check.name for check in CHECKS]
SETTINGS = get_settings("ci")


class FiresTwice(MemoryStorage):
    """Records every tick it is given: a repeated tick stores a second job."""

    def fire(self, schedule: str, tick: float, job: NewJob) -> bool:
        self.enqueue([job])
        self._states()[schedule] = ScheduleState(schedule, tick, False)
        return True


class GoesBack(MemoryStorage):
    """Compares ticks for equality only: an older tick fires again."""

    def fire(self, schedule: str, tick: float, job: NewJob) -> bool:
        with self._schedule_lock():
            state = self._states().get(schedule, ScheduleState(schedule))
            if state.last_tick == tick:
                return False
            if not state.paused:
                self.enqueue([job])
            self._states()[schedule] = ScheduleState(schedule, tick, state.paused)
            return not state.paused


class CheckThenAct(MemoryStorage):
    """Checks the tick, then stores the job and the tick outside the lock: not atomic."""

    def fire(self, schedule: str, tick: float, job: NewJob) -> bool:
        with self._schedule_lock():
            state = self._states().get(schedule, ScheduleState(schedule))
            if state.last_tick is not None and tick <= state.last_tick:
                return False
        time.sleep(0.001)  # another racer checks the same tick meanwhile
        self.enqueue([job])
        with self._schedule_lock():
            self._states()[schedule] = ScheduleState(schedule, tick, state.paused)
        return True


class TickBeforeJob(MemoryStorage):
    """Records the tick first: a job that cannot be stored leaves its tick recorded."""

    def fire(self, schedule: str, tick: float, job: NewJob) -> bool:
        with self._schedule_lock():
            state = self._states().get(schedule, ScheduleState(schedule))
            if state.last_tick is not None and tick <= state.last_tick:
                return False
            self._states()[schedule] = ScheduleState(schedule, tick, state.paused)
            if state.paused:
                return False
            self.enqueue([job])
            return True


class IgnoresPause(MemoryStorage):
    """Stores the job of a paused schedule's tick."""

    def fire(self, schedule: str, tick: float, job: NewJob) -> bool:
        with self._schedule_lock():
            state = self._states().get(schedule, ScheduleState(schedule))
            if state.last_tick is not None and tick <= state.last_tick:
                return False
            self.enqueue([job])
            self._states()[schedule] = ScheduleState(schedule, tick, state.paused)
            return True


@pytest.mark.parametrize(
    ("broken", "caught_by"),
    [
        (FiresTwice, "schedule_tick_once"),
        (GoesBack, "schedule_ticks_forward"),
        (CheckThenAct, "schedule_fire_threads"),
        (TickBeforeJob, "schedule_duplicate_job"),
        (IgnoresPause, "schedule_pause"),
    ],
)
def test_broken_fire_is_caught(broken: type[MemoryStorage], caught_by: str) -> None:
    failures = run_suite(broken, SETTINGS, only=NAMES)
    assert caught_by in failures, f"{broken.__name__} passed {caught_by}: {sorted(failures)}"
    assert str(failures[caught_by]).startswith("rule broken: ")


def test_memory_backend_passes() -> None:
    assert run_suite(MemoryStorage, SETTINGS, only=NAMES) == {}


def test_racing_check_is_not_flaky_on_a_correct_backend() -> None:
    # The thread race against the correct backend, several times: no false alarm.
    for _ in range(3):
        assert run_suite(MemoryStorage, SETTINGS, only=["schedule_fire_threads"]) == {}
    assert threading.active_count() < 50
