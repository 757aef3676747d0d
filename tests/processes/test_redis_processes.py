"""RedisStorage shared by OS processes.

Four spawned processes drain the same 5,000 jobs: each job must be claimed once
and only once. (Throughput is measured in ``benchmarks/``, not here.)
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections import Counter
from typing import Any

from exqueue.storage import NewJob
from exqueue_redis import RedisStorage
from tests.support import services


def _drain(url: str, namespace: str, name: str, start: Any) -> list[str]:
    """Run in a child process: claim and complete until nothing is left."""
    storage = RedisStorage(url, namespace=namespace)
    done: list[str] = []
    start.wait(60)  # all four race from the same moment, however slow their start-up
    while True:
        token = uuid.uuid4().hex
        claimed = storage.claim(
            "w", 25, now=time.time(), owner=name, token=token, lease_until=time.time() + 300
        )
        if not claimed:
            break
        for record in claimed:
            if not storage.complete(record.id, token):
                raise AssertionError(f"{name} lost the lease of {record.id}")
            done.append(record.id)
    storage.close()
    return done


def test_four_processes_claim_every_job_exactly_once() -> None:
    url = services.require("redis")
    namespace = f"t{uuid.uuid4().hex[:8]}"
    storage = RedisStorage(url, namespace=namespace)
    try:
        ids = [f"job-{i}" for i in range(5000)]
        for start in range(0, len(ids), 1000):
            storage.enqueue(
                [
                    NewJob(i, "w", b"x", run_at=0.0, enqueued_at=0.0, max_attempts=1)
                    for i in ids[start : start + 1000]
                ]
            )
        context = multiprocessing.get_context("spawn")
        with context.Manager() as manager, context.Pool(4) as pool:
            start = manager.Barrier(4)
            results = pool.starmap(_drain, [(url, namespace, f"p{n}", start) for n in range(4)])
        claims = Counter(job_id for result in results for job_id in result)
        assert set(claims) == set(ids)
        assert max(claims.values()) == 1
        # Every process took part (the race was real).
        assert all(results)
        assert storage.counts(time.time()) == {}
    finally:
        storage.destroy()
        storage.close()
