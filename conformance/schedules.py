"""Area: schedules (capability ``SCHEDULES``). One tick is recorded once, with its job.

``fire(schedule, tick, job)`` stores the job and records the tick in one atomic
step, only for a tick later than the one recorded; a paused schedule's tick is
recorded without a job. The racing checks run the bodies in
:mod:`conformance.schedule_races`.
"""

from __future__ import annotations

from hypothesis import settings as Settings

from conformance.base import (
    NOW,
    Check,
    RuleBroken,
    StorageFactory,
    expect,
    implements,
    job,
    opened,
    unique,
)
from conformance.schedule_races import SCHEDULES_API, race_fire_processes, race_fire_threads
from exqueue.storage import (
    MULTI_PROCESS,
    PERSISTENT,
    SCHEDULES,
    WAITING,
    ScheduleState,
    SupportsSchedules,
)

AREA = "schedules"


def _state(storage: SupportsSchedules, name: str) -> ScheduleState | None:
    return next((s for s in storage.schedules() if s.name == name), None)


def check_tick_once(factory: StorageFactory, settings: Settings) -> None:
    """A tick fires once: the first fire stores its job and records it, a repeat stores nothing."""
    with opened(factory) as (_, storage):
        store = implements(storage, SupportsSchedules, SCHEDULES_API)
        name, worker = unique("sched"), unique("tick-once")
        tick = NOW + 0.25
        expect(_state(store, name) is None, "a schedule never fired or paused has no state")
        first = store.fire(name, tick, job("t1", worker, b"first"))
        expect(first is True, "fire returns True when it stored the job", first)
        again = store.fire(name, tick, job("t2", worker, b"second"))
        expect(again is False, "a second fire of the same tick returns False", again)
        expect(storage.get("t2") is None, "a second fire of the same tick stores no job")
        record = storage.get("t1")
        expect(
            record is not None and record.state == WAITING and record.payload == b"first",
            "the job of a fired tick is stored as a waiting job, as enqueue stores it",
            record,
        )
        state = _state(store, name)
        expect(
            state == ScheduleState(name, tick, False),
            "schedules() shows the tick recorded, exactly as given, and not paused",
            state,
        )


def check_ticks_forward(factory: StorageFactory, settings: Settings) -> None:
    """Ticks only move forward: a tick at or before the recorded one stores and records nothing."""
    with opened(factory) as (_, storage):
        store = implements(storage, SupportsSchedules, SCHEDULES_API)
        name, worker = unique("sched"), unique("forward")
        expect(store.fire(name, NOW + 10, job("f10", worker)), "the first tick fires")
        older = store.fire(name, NOW + 5, job("f5", worker))
        expect(
            older is False and storage.get("f5") is None,
            "a tick older than the recorded one stores no job",
            older,
        )
        state = _state(store, name)
        expect(
            state is not None and state.last_tick == NOW + 10,
            "an older tick leaves the recorded tick as it was",
            state,
        )
        expect(
            store.fire(name, NOW + 10.5, job("f105", worker))
            and _state(store, name) == ScheduleState(name, NOW + 10.5, False),
            "a later tick fires and is recorded",
            _state(store, name),
        )
        other = unique("sched")
        expect(
            store.fire(other, NOW, job("o1", worker)),
            "schedules are independent: another schedule's first tick fires",
        )
        names = [s.name for s in store.schedules()]
        expect(names == sorted(names), "schedules() is ordered by name", names)


def check_pause(factory: StorageFactory, settings: Settings) -> None:
    """A paused schedule's ticks are recorded without jobs; resumed, later ticks fire."""
    with opened(factory) as (_, storage):
        store = implements(storage, SupportsSchedules, SCHEDULES_API)
        name, worker = unique("sched"), unique("pause")
        store.pause_schedule(name, True)
        expect(
            _state(store, name) == ScheduleState(name, None, True),
            "pausing a schedule with no state creates it, paused, with no tick",
            _state(store, name),
        )
        fired = store.fire(name, NOW, job("p1", worker))
        expect(
            fired is False and storage.get("p1") is None,
            "a paused schedule stores no job",
            fired,
        )
        expect(
            _state(store, name) == ScheduleState(name, NOW, True),
            "a paused schedule's tick is recorded (its ticks pass)",
            _state(store, name),
        )
        store.pause_schedule(name, False)
        expect(
            not store.fire(name, NOW, job("p2", worker)) and storage.get("p2") is None,
            "after a resume, a tick passed while paused does not fire",
        )
        expect(
            store.fire(name, NOW + 1, job("p3", worker)) and storage.get("p3") is not None,
            "after a resume, a later tick fires",
        )


def check_duplicate_job(factory: StorageFactory, settings: Settings) -> None:
    """A fire whose job id is already stored raises ValueError and records no tick."""
    with opened(factory) as (_, storage):
        store = implements(storage, SupportsSchedules, SCHEDULES_API)
        name, worker = unique("sched"), unique("dup")
        storage.enqueue([job("d1", worker, b"original")])
        try:
            store.fire(name, NOW, job("d1", worker, b"copy"))
        except ValueError:
            pass
        else:
            raise RuleBroken("rule broken: a fire with a stored job id raises ValueError")
        state = _state(store, name)
        expect(
            state is None or state.last_tick is None,
            "a fire that raised records no tick",
            state,
        )
        record = storage.get("d1")
        expect(
            record is not None and record.payload == b"original",
            "a fire that raised leaves the stored job as it was",
        )


def check_persisted(factory: StorageFactory, settings: Settings) -> None:
    """PERSISTENT: a fired tick and its job survive close and reopen together."""
    with opened(factory) as (session, storage):
        if PERSISTENT not in storage.capabilities:
            return  # nothing to keep across a reopen
        store = implements(storage, SupportsSchedules, SCHEDULES_API)
        name, worker = unique("sched"), unique("persist")
        store.fire(name, NOW + 3, job("k1", worker))
        store.pause_schedule(name, True)
        reopened = implements(session.reopen(), SupportsSchedules, SCHEDULES_API)
        expect(
            _state(reopened, name) == ScheduleState(name, NOW + 3, True),
            "the recorded tick and the pause survive a reopen",
            _state(reopened, name),
        )
        expect(
            session.reopen().get("k1") is not None,
            "the job of a fired tick survives a reopen",
        )


def check_fire_threads(factory: StorageFactory, settings: Settings) -> None:
    """Threads firing the same ticks at once: exactly one job and one True per tick."""
    with opened(factory) as (_, storage):
        try:
            race_fire_threads(storage)
        except AssertionError as exc:
            raise RuleBroken(f"rule broken: racing fires record one tick once -- {exc}") from exc


def check_fire_processes(factory: StorageFactory, settings: Settings) -> None:
    """MULTI_PROCESS: processes firing the same ticks at once: exactly one job per tick."""
    with opened(factory) as (_, storage):
        if MULTI_PROCESS not in storage.capabilities:
            return  # one process only
    try:
        race_fire_processes(factory)
    except AssertionError as exc:
        raise RuleBroken(
            f"rule broken: racing fires record one tick once (processes) -- {exc}"
        ) from exc


CHECKS = [
    Check("schedule_tick_once", SCHEDULES, check_tick_once, AREA),
    Check("schedule_ticks_forward", SCHEDULES, check_ticks_forward, AREA),
    Check("schedule_pause", SCHEDULES, check_pause, AREA),
    Check("schedule_duplicate_job", SCHEDULES, check_duplicate_job, AREA),
    Check("schedule_fire_threads", SCHEDULES, check_fire_threads, AREA),
    # These two also need PERSISTENT / MULTI_PROCESS, and pass without them.
    Check("schedule_persisted", SCHEDULES, check_persisted, AREA),
    Check("schedule_fire_processes", SCHEDULES, check_fire_processes, AREA),
]
