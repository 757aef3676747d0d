"""Issue 13 item 11: a Redis at maxmemory can still be read and drained.

A private redis-server with a small ``--maxmemory`` (never the shared server's
settings) is filled with jobs until an enqueue is refused; then a new storage,
the CLI and a worker must still open it, list the jobs, and drain them, which
frees the memory so enqueueing works again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import exqueue
from exqueue_redis import RedisStorage
from tests.support.cli import cli
from tests.support.redis_servers import RedisServer

pytestmark = pytest.mark.faults


@pytest.fixture
def full_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", "--maxmemory", "3mb").start()
    try:
        yield server
    finally:
        server.kill()


def fill(url: str) -> int:
    """Enqueue until Redis refuses; returns how many jobs were stored."""
    storage = RedisStorage(url, namespace="full")
    queue = exqueue.Queue(storage)
    stored = 0
    try:
        for _ in range(1000):
            calls = [exqueue.Call("app.job", ("x" * 1000,)) for _ in range(50)]
            queue.enqueue_many(calls, allow_unknown=True)
            stored += 50
    except redis.exceptions.OutOfMemoryError:
        pass
    else:
        pytest.fail("Redis never filled up")
    finally:
        storage.close()
    return stored


def test_a_full_redis_can_be_opened_listed_and_drained(full_redis: RedisServer) -> None:
    stored = fill(full_redis.url)
    # Opening writes nothing into an existing namespace, and a fresh one still opens.
    RedisStorage(full_redis.url, namespace="other").close()
    storage = RedisStorage(full_redis.url, namespace="full")
    queue = exqueue.Queue(storage, lease=3.0)
    # Used memory hovers around the limit (clients come and go, a refused
    # command's arguments are freed): enqueue until one is refused again.
    for _ in range(100):
        try:
            queue.enqueue_many([exqueue.Call("app.job", ("one more",))], allow_unknown=True)
        except redis.exceptions.OutOfMemoryError:
            break
        stored += 1
    else:
        pytest.fail("the full Redis took 100 more jobs")
    assert queue.stats()["app.job"].waiting == stored  # the refused enqueue left nothing
    options = ["--storage", full_redis.url, "--namespace", "full"]
    shown = cli("jobs", *options, "--json", "--limit", "3")
    assert shown.returncode == 0, shown.stderr
    assert len(json.loads(shown.stdout)) == 3
    counted = cli("stats", *options, "--json")
    assert counted.returncode == 0, counted.stderr
    assert json.loads(counted.stdout)["app.job"]["waiting"] == stored

    ran: list[str] = []

    @queue.worker(name="app.job", concurrency=4)
    def job(text: str) -> None:
        ran.append(text)

    # A started worker (recovery, heartbeats, wake-up listener) drains it.
    queue.start()
    try:
        deadline = time.monotonic() + 120
        while queue.stats()["app.job"].waiting + queue.stats()["app.job"].running:
            assert time.monotonic() < deadline, "the full Redis was not drained"
            time.sleep(0.2)
        # Memory is free again: a new job is stored and run.
        queue.enqueue("app.job", "after")
        while "after" not in ran:
            assert time.monotonic() < deadline, "a job enqueued after draining did not run"
            time.sleep(0.05)
    finally:
        queue.stop(timeout=10)
        storage.close()
    assert len(ran) == stored + 1
