"""RedisStorage shared by OS processes, and its single-client throughput.

Four spawned processes drain the same 5,000 jobs: each job must be claimed once
and only once. The throughput test prints its figures (run with ``-s``) and
fails only far below the targets, so a loaded CI machine does not flake.
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections import Counter

import pytest

from exqueue.storage import NewJob
from exqueue_redis import RedisStorage
from tests import services


def _drain(url: str, namespace: str, name: str) -> list[str]:
    """Run in a child process: claim and complete until nothing is left."""
    storage = RedisStorage(url, namespace=namespace)
    done: list[str] = []
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
        with context.Pool(4) as pool:
            results = pool.starmap(_drain, [(url, namespace, f"p{n}") for n in range(4)])
        claims = Counter(job_id for result in results for job_id in result)
        assert set(claims) == set(ids)
        assert max(claims.values()) == 1
        # Every process took part (the race was real).
        assert all(results)
        assert storage.counts(time.time()) == {}
    finally:
        storage.destroy()
        storage.close()


@pytest.mark.slow
def test_single_client_throughput() -> None:
    url = services.require("redis")
    storage = RedisStorage(url, namespace=f"t{uuid.uuid4().hex[:8]}")
    n = 10_000
    payload = b'{"args":[42],"kwargs":{"lang":"sv"}}'

    def new(i: int, tag: str) -> NewJob:
        return NewJob(f"{tag}{i}", "w", payload, run_at=0.0, enqueued_at=0.0, max_attempts=6)

    try:
        started = time.perf_counter()
        for i in range(n):
            storage.enqueue([new(i, "s")])
        single = n / (time.perf_counter() - started)

        started = time.perf_counter()
        for start in range(0, n, 1000):
            storage.enqueue([new(i, "b") for i in range(start, start + 1000)])
        batch = n / (time.perf_counter() - started)

        started = time.perf_counter()
        drained = 0
        while True:
            claimed = storage.claim("w", 100, now=1.0, owner="o", token="t", lease_until=100.0)
            if not claimed:
                break
            for record in claimed:
                storage.complete(record.id, "t")
            drained += len(claimed)
        drain = drained / (time.perf_counter() - started)
        assert drained == 2 * n

        print(
            f"\nredis single-client: enqueue {single:,.0f}/s, batch enqueue (1000/call) "
            f"{batch:,.0f} jobs/s, claim(100)+complete {drain:,.0f} jobs/s"
        )
        # Far below the targets (15,000 and 10,000/s), so a CPU-starved CI machine
        # passes; what fails is a step change such as a scan per call.
        assert single > 500 and batch > 5000 and drain > 300
    finally:
        storage.destroy()
        storage.close()
