"""Drain throughput of one worker process, for the price of the acker's bound (issue 13 item 19).

    python benchmarks/ackbound.py [--backends sqlite postgres mysql] [--jobs N] [--concurrency C]

Enqueues ``--jobs`` no-op jobs in one batch, times ``queue.drain()`` with
``--concurrency`` threads, checks every job ran and nothing is left, and prints
jobs/s per backend. Run it on two checkouts (``PYTHONPATH=<checkout>``) back to
back to compare them; docs/reliability.md quotes its figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid

import exqueue

URLS = {
    "postgres": "postgresql://postgres@127.0.0.1:5432/test",
    "mysql": "mysql://root@127.0.0.1:3306/test",
}


def drain_rate(backend: str, jobs: int, concurrency: int) -> float:
    from exqueue_sql import SQLStorage

    with tempfile.TemporaryDirectory(prefix="exqueue-ackbound-") as tmp:
        if backend == "sqlite":
            storage = SQLStorage(f"sqlite:///{tmp}/bench.db")
        else:
            storage = SQLStorage(URLS[backend], prefix=f"ackb_{uuid.uuid4().hex[:8]}")
        try:
            queue = exqueue.Queue(storage, poll_interval=0.05)
            queue.worker(name="noop", concurrency=concurrency, max_retries=0)(lambda n: None)
            queue.enqueue_many([exqueue.Call("noop", (n,)) for n in range(jobs)])
            started = time.perf_counter()
            ran = queue.drain()
            seconds = time.perf_counter() - started
            if ran != jobs or queue.jobs():
                raise SystemExit(f"{backend}: {ran} of {jobs} jobs ran; left: {queue.jobs()}")
            return jobs / seconds
        finally:
            if backend != "sqlite":
                storage.destroy()
            storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres", "mysql"],
                        choices=["sqlite", *URLS])  # fmt: skip
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    for backend in args.backends:
        rate = drain_rate(backend, args.jobs, args.concurrency)
        print(f"{backend}: {args.jobs:,} no-op jobs, concurrency {args.concurrency}: ", end="")
        print(f"{rate:,.0f} jobs/s")


if __name__ == "__main__":
    main()
