"""Racing ``fire``: threads sharing one storage object, and OS processes sharing one store.

Every racer offers the same ticks of one schedule, in order, each with a job
of its own; afterwards exactly one job per tick must be stored and exactly one
``fire`` per tick must have returned True. Like :mod:`conformance.concurrency`
this module imports no Hypothesis, so spawned children start quickly.
"""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from exqueue.storage import NewJob, Storage, SupportsSchedules

StorageFactory = Callable[[], Storage]

NOW = 1_700_000_000.0


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
    assert isinstance(storage, SupportsSchedules)
    return [
        tick
        for tick in range(1, ticks + 1)
        if storage.fire(schedule, NOW + tick, _tick_job(worker, racer, tick))
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
    start = threading.Barrier(threads)
    wins: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def racer(index: int) -> None:
        try:
            start.wait()
            won = _offer(storage, schedule, worker, index, ticks)
            with lock:
                wins.extend(won)
        except BaseException as exc:  # reported below
            errors.append(exc)

    pool = [threading.Thread(target=racer, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(120)
    assert not errors, f"a racing fire raised: {errors[:3]!r}"
    check_outcome(storage, worker, wins, ticks)


def _process_racer(
    factory: StorageFactory,
    schedule: str,
    worker: str,
    index: int,
    ticks: int,
    start: Any,
    results: Any,
) -> None:
    won: list[int] = []
    error = ""
    try:
        storage = factory()
        try:
            start.wait(60)
            won = _offer(storage, schedule, worker, index, ticks)
        finally:
            storage.close()
    except BaseException as exc:
        error = repr(exc)
    results.put((won, error))


def race_fire_processes(factory: StorageFactory, *, processes: int = 3, ticks: int = 30) -> None:
    tag = uuid.uuid4().hex[:8]
    schedule, worker = f"race-{tag}", f"race.schedule.{tag}"
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes)
    results = context.Queue()
    children = [
        context.Process(
            target=_process_racer,
            args=(factory, schedule, worker, i, ticks, start, results),
            daemon=True,
        )
        for i in range(processes)
    ]
    for child in children:
        child.start()
    reports = [results.get(timeout=180) for _ in children]
    for child in children:
        child.join(30)
    errors = [error for _, error in reports if error]
    assert not errors, "a racing process failed:\n" + "\n".join(errors)
    storage = factory()
    try:
        check_outcome(storage, worker, [tick for won, _ in reports for tick in won], ticks)
    finally:
        storage.close()
