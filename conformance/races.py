"""Area: races. Threads and processes at once: claims stay exclusive, seq stays unique.

The state machine runs one operation at a time, so it cannot see a claim or an
enqueue that is not atomic. Here several threads (sharing one storage object)
or processes (each with its own) claim and enqueue at the same time; the
race bodies live in :mod:`conformance.concurrency`.
"""

from __future__ import annotations

import threading

from hypothesis import settings as Settings

from conformance.base import Check, RuleBroken, StorageFactory, expect, job, opened, unique
from conformance.concurrency import race_processes, race_threads
from exqueue.storage import MULTI_PROCESS

AREA = "races"


RACE_RULE = (
    "claim is atomic: while a lease is held no other claimer gets the job, every job is "
    "claimed and completed exactly once, none is lost"
)


def check_thread_race(factory: StorageFactory, settings: Settings) -> None:
    """Threads racing to claim from one storage object: no double claim, no loss."""
    with opened(factory) as (_, storage):
        try:
            race_threads(storage)
        except AssertionError as exc:
            raise RuleBroken(f"rule broken: {RACE_RULE} (threads) -- {exc}") from exc


def check_process_race(factory: StorageFactory, settings: Settings) -> None:
    """MULTI_PROCESS: spawned processes racing to claim: no double claim, no loss."""
    with opened(factory):
        pass  # empties the store before the children start
    try:
        race_processes(factory)
    except AssertionError as exc:
        raise RuleBroken(f"rule broken: {RACE_RULE} (processes) -- {exc}") from exc


def check_concurrent_enqueue(factory: StorageFactory, settings: Settings) -> None:
    """Threads enqueueing at once get distinct seq values, each thread's jobs in its order."""
    threads, per_thread = 4, 40
    with opened(factory) as (_, storage):
        worker = unique("enq-race")
        start = threading.Barrier(threads)
        errors: list[BaseException] = []

        def producer(index: int) -> None:
            try:
                start.wait()
                for n in range(per_thread):
                    size = 1 + n % 3
                    storage.enqueue([job(f"e{index}-{n:03d}-{k}", worker) for k in range(size)])
            except BaseException as exc:  # reported below
                errors.append(exc)

        pool = [threading.Thread(target=producer, args=(i,), daemon=True) for i in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(120)
        expect(not errors, "concurrent enqueues of distinct ids all succeed", errors[:3])
        listed = storage.list_jobs(worker=worker, limit=100_000)
        total = threads * sum(1 + n % 3 for n in range(per_thread))
        expect(len(listed) == total, "no concurrent enqueue is lost", f"{len(listed)} of {total}")
        seqs = [r.seq for r in listed]
        expect(
            len(set(seqs)) == len(seqs),
            "every job gets its own seq, even when threads enqueue at once",
            f"{len(seqs) - len(set(seqs))} seq values repeated",
        )
        for index in range(threads):
            mine = [r.id for r in listed if r.id.startswith(f"e{index}-")]
            expect(
                mine == sorted(mine),
                "each thread's jobs are in its enqueue order (seq strictly increasing)",
                f"thread {index}: {mine[:6]}...",
            )


CHECKS = [
    Check("concurrent_enqueue", None, check_concurrent_enqueue, AREA),
    Check("thread_race", None, check_thread_race, AREA),
    Check("process_race", MULTI_PROCESS, check_process_race, AREA),
]
