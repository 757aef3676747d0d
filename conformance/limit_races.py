"""Real races for limited claims: 8 threads on one storage object, 4 OS processes on one store.

Every racer claims two limited worker types in turn (one bounded as a whole,
one per partition) with ``claim_limited``, holds each job for a millisecond or
two and completes it. Each racer records, for every job, the instant its claim
returned and the instant just before its completion was sent (a monotonic
clock the processes of one machine share), with the job's partition as the
store returned it. The store ran the job over a longer interval than that
(claimed before the claim returned, completed after the call was sent), so if
the recorded intervals ever overlap more than the limit, the real ones did:
the limit was exceeded at that instant. The peak seen is reported next to the
limit. The racers run on :func:`conformance.races.run_threads` and
:func:`~conformance.races.run_processes`.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from conformance.base import StorageFactory, implements
from conformance.races import Barrier, run_processes, run_threads
from exqueue.storage import LimitedClaim, Limits, NewJob, Storage, SupportsLimits

NOW = 1_700_000_000.0
LEASE = 3600.0
LIMITS_API = "a backend declaring 'limits' implements claim_limited"
#: The type bounded as a whole, and the type bounded per partition.
WHOLE = Limits(concurrency=3)
PER_PARTITION = Limits(concurrency=2, partitioned=True)
PARTITIONS = ("p0", "p1", "p2")
#: Env var naming a file the races append their peak figures to (one line per race).
FIGURES_ENV = "EXQUEUE_LIMIT_RACE_FIGURES"

#: (instant claimed, instant released, worker, partition, job id)
Interval = tuple[float, float, str, "str | None", str]


@dataclass(frozen=True)
class RaceFigures:
    """The peaks of running jobs seen, against the limits."""

    whole_peak: int
    whole_limit: int
    partition_peak: int
    partition_limit: int
    claims: int

    def line(self, how: str) -> str:
        return (
            f"{how}: peak {self.whole_peak} running of limit {self.whole_limit} (whole type), "
            f"peak {self.partition_peak} of {self.partition_limit} per partition, "
            f"{self.claims} jobs"
        )


def _jobs(worker: str, count: int, partitioned: bool) -> list[NewJob]:
    return [
        NewJob(
            id=f"lr-{uuid.uuid4().hex}",
            worker=worker,
            payload=b"",
            run_at=NOW,
            enqueued_at=NOW,
            max_attempts=3,
            partition=PARTITIONS[n % len(PARTITIONS)] if partitioned else None,
        )
        for n in range(count)
    ]


def _claimer(
    storage: Storage, index: int, start: Barrier, workers: tuple[str, str], deadline: float
) -> list[Interval]:
    """Claim both types in turn until neither has a waiting job; the intervals held."""
    limited = implements(storage, SupportsLimits, LIMITS_API)
    rng = random.Random(index)
    held: list[Interval] = []
    done = {workers[0]: False, workers[1]: False}
    start.wait(120)
    turn = index
    while not all(done.values()):
        if time.monotonic() > deadline:
            raise AssertionError(f"racer {index} was still claiming at its deadline")
        turn += 1
        worker = workers[turn % 2]
        if done[worker]:
            continue
        limits = PER_PARTITION if turn % 2 else WHOLE
        token = f"r{index}-{uuid.uuid4().hex}"
        request = LimitedClaim(
            worker, 1 + index % 2, NOW, f"racer-{index}", token, NOW + LEASE, limits
        )
        got = limited.claim_limited(request)
        claimed_at = time.perf_counter()
        if not got:
            counts = storage.counts(NOW).get(worker)
            done[worker] = counts is None or counts.waiting == 0
            time.sleep(0.001)
            continue
        time.sleep(0.001 + rng.random() * 0.001)  # the job runs 1-2 ms
        for record in got:
            released_at = time.perf_counter()
            held.append((claimed_at, released_at, worker, record.partition, record.id))
            if not storage.complete(record.id, token):
                raise AssertionError(f"complete of {record.id} refused to its only holder")
    return held


def _peaks(intervals: list[Interval], worker: str, partitioned: bool) -> dict[object, int]:
    """The most intervals of ``worker`` open at one instant, per bucket."""
    events: list[tuple[float, int, object]] = []
    for claimed, released, of, partition, _ in intervals:
        if of == worker:
            key = partition if partitioned else None
            events += [(claimed, 1, key), (released, -1, key)]
    # At one instant a release counts before a claim: only a sure overlap is a breach.
    events.sort(key=lambda event: (event[0], event[1]))
    open_now: Counter[object] = Counter()
    peak: Counter[object] = Counter()
    for _, step, bucket in events:
        open_now[bucket] += step
        peak[bucket] = max(peak[bucket], open_now[bucket])
    return dict(peak)


def _verify(
    storage: Storage, intervals: list[Interval], workers: tuple[str, str], total: int
) -> RaceFigures:
    done = Counter(job_id for *_, job_id in intervals)
    twice = [job_id for job_id, n in done.items() if n > 1]
    assert not twice, f"jobs claimed and completed twice: {twice[:5]}"
    assert len(done) == total, f"{total - len(done)} of {total} jobs never claimed"
    for worker in workers:
        left = storage.list_jobs(worker=worker, limit=10)
        assert not left, f"jobs left behind: {[r.id for r in left]}"
    wrong = [i for i in intervals if i[2] == workers[1] and i[3] not in PARTITIONS]
    assert not wrong, f"claim_limited returned jobs without their partition: {wrong[:3]}"
    whole = _peaks(intervals, workers[0], False).get(None, 0)
    parts = _peaks(intervals, workers[1], True)
    worst = max(parts.values(), default=0)
    assert whole <= WHOLE.concurrency, (  # type: ignore[operator]
        f"{whole} jobs of a type limited to {WHOLE.concurrency} were running at one instant"
    )
    assert worst <= PER_PARTITION.concurrency, (  # type: ignore[operator]
        f"{worst} jobs of one partition (limit {PER_PARTITION.concurrency}) were running at "
        f"one instant: {parts}"
    )
    return RaceFigures(whole, WHOLE.concurrency or 0, worst, PER_PARTITION.concurrency or 0, total)


def _record(figures: RaceFigures, how: str, storage: Storage) -> RaceFigures:
    path = os.environ.get(FIGURES_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(f"{type(storage).__name__} {figures.line(how)}\n")
    return figures


def race_limits_threads(storage: Storage, *, threads: int = 8, jobs: int = 40) -> RaceFigures:
    """``threads`` threads share ``storage``, claiming both limited types."""
    tag = uuid.uuid4().hex[:8]
    workers = (f"race.limit.{tag}", f"race.limit.part.{tag}")
    storage.enqueue(_jobs(workers[0], jobs, False) + _jobs(workers[1], jobs, True))
    deadline = time.monotonic() + 60

    def racer(index: int, start: Barrier) -> list[Interval]:
        return _claimer(storage, index, start, workers, deadline)

    intervals = [i for held in run_threads(racer, threads) for i in held]
    figures = _verify(storage, intervals, workers, 2 * jobs)
    return _record(figures, f"{threads} threads", storage)


def race_limits_processes(
    factory: StorageFactory, *, processes: int = 4, jobs: int = 40
) -> RaceFigures:
    """``processes`` spawned processes, each with its own storage object over one store."""
    tag = uuid.uuid4().hex[:8]
    workers = (f"race.limit.proc.{tag}", f"race.limit.proc.part.{tag}")
    storage = factory()
    try:
        storage.enqueue(_jobs(workers[0], jobs, False) + _jobs(workers[1], jobs, True))
        # Each child measures its deadline from its own start (spawning takes a while).
        held = run_processes(factory, _process_claimer, processes, (workers,))
        intervals = [i for part in held for i in part]
        figures = _verify(storage, intervals, workers, 2 * jobs)
        return _record(figures, f"{processes} processes", storage)
    finally:
        storage.close()


def _process_claimer(
    storage: Storage, index: int, start: Barrier, workers: tuple[str, str]
) -> list[Interval]:
    return _claimer(storage, index, start, workers, time.monotonic() + 120)


def _hold_and_wait(factory: StorageFactory, worker: str, limit: int, ready: Any) -> None:
    """A node that takes every slot of ``worker`` and then hangs until it is killed."""
    storage = implements(factory(), SupportsLimits, LIMITS_API)
    request = LimitedClaim(worker, limit, NOW, "doomed-node", "doomed", NOW + 5, Limits(limit))
    got = storage.claim_limited(request)
    ready.put(len(got))
    time.sleep(600)


def kill_and_recover(factory: StorageFactory, *, limit: int = 2, jobs: int = 5) -> None:
    """A process holding every slot is killed with SIGKILL; recovery gives the slots back."""
    import multiprocessing
    import signal

    from conformance.races import picklable

    picklable(factory)
    worker = f"race.limit.kill.{uuid.uuid4().hex[:8]}"
    limits = Limits(concurrency=limit)
    storage = factory()
    try:
        limited = implements(storage, SupportsLimits, LIMITS_API)
        storage.enqueue(_jobs(worker, jobs, False))
        context = multiprocessing.get_context("spawn")
        ready = context.Queue()
        child = context.Process(target=_hold_and_wait, args=(factory, worker, limit, ready))
        child.start()
        try:
            held = ready.get(timeout=120)
        finally:
            if child.pid is not None:
                os.kill(child.pid, signal.SIGKILL)
            child.join(30)
        assert held == limit, f"the doomed node claimed {held} jobs, expected {limit}"

        def claim(now: float, owner: str) -> list[str]:
            request = LimitedClaim(worker, jobs, now, owner, uuid.uuid4().hex, now + 60, limits)
            return [record.id for record in limited.claim_limited(request)]

        early = claim(NOW + 1, "survivor")
        assert early == [], (
            f"while a killed node's leases are live its slots are held, yet {early} were claimed"
        )
        recovered = storage.recover(NOW + 5, error="worker lost")
        assert len(recovered.waiting) == limit, f"recover took back {recovered}, expected {limit}"
        after = claim(NOW + 5, "survivor")
        assert len(after) == limit, (
            f"after the killed node's leases were recovered {len(after)} jobs were claimed, "
            f"expected its {limit} slots back"
        )
    finally:
        storage.close()
