"""Real races for unique enqueue: threads sharing one storage, and OS processes.

Every racer enqueues a job with the same key at the same moment (a barrier);
exactly one job may be stored, and every racer must get that job's id back. A
round is a single job per racer or a small batch whose unique job sits among
plain ones, so a backend that checks the key before its transaction (or per
statement instead of per batch) is caught in the gap.

The racers run on :func:`conformance.races.run_threads` and
:func:`~conformance.races.run_processes` (spawned children, a picklable factory).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from conformance.races import Barrier, run_processes, run_threads
from exqueue.storage import NewJob, Storage, Unique

StorageFactory = Callable[[], Storage]

NOW = 1_700_000_000.0


def _round_batch(worker: str, key: str, racer: int, round_no: int) -> list[NewJob]:
    """Odd rounds: the keyed job between two plain ones; even rounds: it alone."""
    keyed = NewJob(
        id=f"uq-{key}-r{racer}",
        worker=worker,
        payload=b"",
        run_at=NOW,
        enqueued_at=NOW,
        max_attempts=3,
        unique=Unique(key),
    )
    if round_no % 2 == 0:
        return [keyed]
    plain = [NewJob(f"plain-{key}-r{racer}-{n}", worker, b"", NOW, NOW, 3) for n in range(2)]
    return [plain[0], keyed, plain[1]]


def _answer(batch: list[NewJob], result: object) -> str:
    """The id ``enqueue`` returned for the keyed job of ``batch``."""
    index = next(n for n, new in enumerate(batch) if new.unique is not None)
    assert isinstance(result, list) and len(result) == len(batch), (
        f"enqueue returned {result!r}, expected one id per job"
    )
    answer = result[index]
    assert isinstance(answer, str), f"enqueue returned {answer!r} for a job, expected an id"
    return answer


def _verify(
    storage: Storage, worker: str, key: str, round_no: int, answers: list[str], racers: int
) -> None:
    listed = storage.list_jobs(worker=worker, limit=10_000)
    stored = [r for r in listed if r.unique_key == key]
    assert len(stored) == 1, (
        f"key {key!r}: {len(stored)} jobs stored by {racers} racing enqueuers, expected "
        f"exactly one: {[r.id for r in stored]}"
    )
    holder = stored[0].id
    wrong = [answer for answer in answers if answer != holder]
    assert not wrong, f"key {key!r}: the stored job is {holder!r}, but enqueue returned {wrong}"
    plain = [r for r in listed if r.id.startswith(f"plain-{key}-")]
    expected = 2 * racers if round_no % 2 else 0
    assert len(plain) == expected, (
        f"key {key!r}: {len(plain)} plain jobs of the racing batches stored, expected {expected}"
    )


def race_unique_threads(storage: Storage, *, threads: int = 8, rounds: int = 12) -> None:
    """``threads`` threads share ``storage``; each round they enqueue one key at once."""
    tag = uuid.uuid4().hex[:8]
    worker = f"race.unique.{tag}"
    for round_no in range(rounds):
        key = f"{tag}-{round_no}"

        def racer(index: int, start: Barrier, key: str = key, round_no: int = round_no) -> str:
            batch = _round_batch(worker, key, index, round_no)
            start.wait(60)
            return _answer(batch, storage.enqueue(batch))

        answers = run_threads(racer, threads)
        _verify(storage, worker, key, round_no, answers, threads)


def _process_racer(
    storage: Storage, index: int, start: Barrier, worker: str, tag: str, rounds: int
) -> list[str]:
    """Child process body: each round, wait for the others, then enqueue."""
    answers: list[str] = []
    for round_no in range(rounds):
        batch = _round_batch(worker, f"{tag}-{round_no}", index, round_no)
        start.wait(120)
        answers.append(_answer(batch, storage.enqueue(batch)))
    return answers


def race_unique_processes(factory: StorageFactory, *, processes: int = 4, rounds: int = 6) -> None:
    """Separate OS processes (``spawn``), each with its own storage object, race per round."""
    tag = uuid.uuid4().hex[:8]
    worker = f"race.unique.processes.{tag}"
    reports = run_processes(factory, _process_racer, processes, (worker, tag, rounds))
    storage = factory()
    try:
        for round_no in range(rounds):
            answers = [answers[round_no] for answers in reports]
            _verify(storage, worker, f"{tag}-{round_no}", round_no, answers, processes)
    finally:
        storage.close()
