"""Unique enqueue under races on Redis and Redis Cluster: 4 processes of 8 threads each
enqueue the same unique key at once, for several keys in turn, and exactly one job
per key is stored, its id returned to every enqueuer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from exqueue_redis import RedisStorage

REPO = Path(__file__).resolve().parents[3]
ROUNDS = 10

# One process: 8 threads, each with its own storage, enqueue one job per round
# under the round's key, all released together by a barrier.
ENQUEUER = textwrap.dedent("""
    import json, sys, threading, time, uuid
    from exqueue.storage import NewJob, Unique
    from exqueue_redis import RedisStorage
    url, ns, start, rounds = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    storages = [RedisStorage(url, namespace=ns) for _ in range(8)]
    barrier = threading.Barrier(8)
    out = [[None] * 8 for _ in range(rounds)]
    def run(t):
        for r in range(rounds):
            job = NewJob(uuid.uuid4().hex, "app.w", b"p", 0.0, 0.0, 3,
                         unique=Unique(f"key-{r}", period=60.0))
            barrier.wait()
            out[r][t] = storages[t].enqueue([job])[0]
    while time.time() < start:
        time.sleep(0.001)
    threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps(out))
""")


@pytest.fixture
def storage(url: str) -> Iterator[RedisStorage]:
    store = RedisStorage(url, namespace=f"t{uuid.uuid4().hex[:8]}")
    yield store
    store.destroy()
    store.close()


def test_racing_unique_enqueues_leave_one_job_per_key(url: str, storage: RedisStorage) -> None:
    start = time.time() + 2.0  # every process is up and waiting by then
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", ENQUEUER, url, storage.namespace, repr(start), str(ROUNDS)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    holders: list[list[list[str]]] = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        holders.append(json.loads(out))
    jobs = storage.list_jobs(limit=1000)
    assert len(jobs) == ROUNDS
    by_key = {job.unique_key: job.id for job in jobs}
    for r in range(ROUNDS):
        returned = {holder for process in holders for holder in process[r]}
        assert returned == {by_key[f"key-{r}"]}
