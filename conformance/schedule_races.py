"""Racing ``fire``: threads sharing one storage object, and OS processes sharing one store.

Every racer offers the same ticks of one schedule, in order, each with a job
of its own; afterwards exactly one job per tick must be stored and exactly one
``fire`` per tick must have returned True. The racers run on
:func:`conformance.races.run_threads` and :func:`~conformance.races.run_processes`.
"""

from __future__ import annotations

import uuid
from collections import Counter

from conformance.base import StorageFactory, implements
from conformance.races import Barrier, run_processes, run_threads
from exqueue.storage import NewJob, Storage, SupportsSchedules

NOW = 1_700_000_000.0

SCHEDULES_API = "a backend declaring 'schedules' implements fire, schedules and pause_schedule"


def _tick_job(worker: str, racer: int, tick: int) -> NewJob:
    return NewJob(
        id=f"tick-{uuid.uuid4().hex}",
        worker=worker,
        payload=f"{tick}:{racer}".encode(),
        run_at=NOW + tick,
        enqueued_at=NOW + tick,
        max_attempts=1,
    )


def _offer(storage: Storage, schedule: str, worker: str, racer: int, ticks: int) -> list[int]:
    """Fire ticks 1..ticks of ``schedule``; the ticks this racer won."""
    store = implements(storage, SupportsSchedules, SCHEDULES_API)
    return [
        tick
        for tick in range(1, ticks + 1)
        if store.fire(schedule, NOW + tick, _tick_job(worker, racer, tick))
    ]


def check_outcome(storage: Storage, worker: str, wins: list[int], ticks: int) -> None:
    """Exactly one win and one stored job per tick."""
    won = Counter(wins)
    twice = sorted(tick for tick, n in won.items() if n > 1)
    assert not twice, f"fire returned True to two racers for ticks {twice[:10]}"
    stored = Counter(
        int(record.payload.split(b":")[0])
        for record in storage.list_jobs(worker=worker, limit=10 * ticks)
    )
    extra = sorted(tick for tick, n in stored.items() if n > 1)
    assert not extra, f"more than one job stored for ticks {extra[:10]}"
    assert sorted(stored) == sorted(won), (
        f"the jobs stored ({len(stored)}) are not those of the fires that returned True "
        f"({len(won)})"
    )


def race_fire_threads(storage: Storage, *, threads: int = 4, ticks: int = 40) -> None:
    tag = uuid.uuid4().hex[:8]
    schedule, worker = f"race-{tag}", f"race.schedule.{tag}"

    def racer(index: int, start: Barrier) -> list[int]:
        start.wait()
        return _offer(storage, schedule, worker, index, ticks)

    wins = run_threads(racer, threads)
    check_outcome(storage, worker, [tick for won in wins for tick in won], ticks)


def _process_racer(
    storage: Storage, index: int, start: Barrier, schedule: str, worker: str, ticks: int
) -> list[int]:
    start.wait(60)
    return _offer(storage, schedule, worker, index, ticks)


def race_fire_processes(factory: StorageFactory, *, processes: int = 3, ticks: int = 30) -> None:
    tag = uuid.uuid4().hex[:8]
    schedule, worker = f"race-{tag}", f"race.schedule.{tag}"
    wins = run_processes(factory, _process_racer, processes, (schedule, worker, ticks))
    storage = factory()
    try:
        check_outcome(storage, worker, [tick for won in wins for tick in won], ticks)
    finally:
        storage.close()
