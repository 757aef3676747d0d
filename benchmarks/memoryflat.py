"""MemoryStorage's memory over a long run: resident memory and index entries after
each round of enqueueing and draining jobs through a Queue.

    python -m benchmarks.memoryflat [--jobs 200000] [--rounds 4]

Each round enqueues ``--jobs / --rounds`` jobs in batches and drains them with
``queue.drain()``; after every round it prints the process's resident memory
(Linux ``/proc/self/statm``) and how many index entries the storage holds. With
nothing stored after a drain, both should stay flat from round to round.
"""

from __future__ import annotations

import argparse
import gc

import exqueue
from exqueue.supervisor import resident_mb
from exqueue_memory import MemoryStorage


def index_entries(storage: MemoryStorage) -> int:
    heaps = [storage._scheduled, storage._ready, storage._lapsed, storage._order]
    return sum(len(heap) for index in heaps for heap in index.values()) + len(storage._expiry)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=4)
    options = parser.parse_args()
    storage = MemoryStorage()
    queue = exqueue.Queue(storage)

    @queue.worker(name="bench.noop", concurrency=4)
    def noop(n: int) -> None:
        pass

    gc.collect()
    print(f"start: {resident_mb():.1f} MB resident, {index_entries(storage)} index entries")
    per_round = options.jobs // options.rounds
    for number in range(1, options.rounds + 1):
        for start in range(0, per_round, 1000):
            queue.enqueue_many([noop.call(n) for n in range(start, min(start + 1000, per_round))])
        ran = queue.drain()
        gc.collect()
        print(
            f"round {number}: {number * per_round} jobs run ({ran} now), "
            f"{resident_mb():.1f} MB resident, {index_entries(storage)} index entries"
        )


if __name__ == "__main__":
    main()
