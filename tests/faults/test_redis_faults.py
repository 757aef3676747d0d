"""RedisStorage under faults: crash with AOF, a restart mid-use, no server, no driver.

Every server here is a redis-server of the test's own (free port, temp dir); the
shared server is never stopped.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from exqueue.errors import ConfigurationError
from exqueue.registry import connect
from exqueue.storage import RUNNING, WAITING, NewJob
from exqueue_redis import RedisStorage
from tests.support.redis_servers import RedisServer, free_port

pytestmark = pytest.mark.faults


def jobs(prefix: str, count: int) -> list[NewJob]:
    return [
        NewJob(f"{prefix}{i}", "w", b"payload %d" % i, run_at=float(i), enqueued_at=0.5,
               max_attempts=3)
        for i in range(count)
    ]  # fmt: skip


@pytest.fixture
def aof_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always")
    server.start()
    yield server
    server.kill()


def test_aof_always_keeps_every_job_across_kill_9(aof_server: RedisServer) -> None:
    storage = RedisStorage(aof_server.url, namespace="durable")
    storage.enqueue(jobs("batch", 500))
    for job in jobs("single", 50):
        storage.enqueue([job])
    claimed = storage.claim("w", 10, now=1e9, owner="n", token="t", lease_until=2e9)
    assert storage.complete(claimed[0].id, "t")
    before = storage.list_jobs(limit=10_000)
    storage.close()

    aof_server.kill()  # SIGKILL: no shutdown save, only what the AOF has
    aof_server.start()

    reopened = RedisStorage(aof_server.url, namespace="durable")
    after = reopened.list_jobs(limit=10_000)
    assert len(after) == 549 and after == before
    running = {r.id for r in after if r.state == RUNNING}
    assert running == {r.id for r in claimed[1:]}
    assert all(r.state == WAITING for r in after if r.id not in running)
    # The sequence counter survived too: a new job goes after every old one.
    reopened.enqueue(jobs("new", 1))
    new = reopened.get("new0")
    assert new is not None and new.seq == 551
    reopened.close()


def test_restart_mid_use_raises_then_recovers(aof_server: RedisServer) -> None:
    storage = RedisStorage(aof_server.url, namespace="outage")
    producer = RedisStorage(aof_server.url, namespace="outage")
    storage.enqueue(jobs("a", 3))
    assert storage.wait_for_jobs(0.01) is False  # the subscription exists before the outage

    # A waiter blocked when the server dies gets an error, not a hang.
    outcome: list[object] = []

    def wait() -> None:
        try:
            outcome.append(storage.wait_for_jobs(30.0))
        except redis.ConnectionError as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.2)
    aof_server.kill()
    waiter.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], redis.ConnectionError)

    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        storage.enqueue(jobs("b", 1))
    with pytest.raises(redis.ConnectionError):
        storage.claim("w", 1, now=10.0, owner="n", token="t", lease_until=20.0)
    with pytest.raises(redis.ConnectionError):
        storage.get("a0")
    with pytest.raises(redis.ConnectionError):
        storage.wait_for_jobs(1.0)
    # Refused at once: no retry loop with backoff while the server is down.
    assert time.monotonic() - started < 2.0

    aof_server.start()
    # Back: the very first calls work, on both connections.
    claimed = storage.claim("w", 5, now=10.0, owner="n", token="t", lease_until=20.0)
    assert [r.id for r in claimed] == ["a0", "a1", "a2"]
    assert storage.complete("a0", "t")
    woken: list[bool] = []
    waiter = threading.Thread(target=lambda: woken.append(storage.wait_for_jobs(5.0)))
    waiter.start()
    time.sleep(0.2)
    sent = time.monotonic()
    producer.enqueue(jobs("c", 1))
    waiter.join(6)
    assert woken == [True] and time.monotonic() - sent < 0.5
    storage.close()
    producer.close()


def test_unreachable_server_is_one_clear_error() -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(
        ConfigurationError, match=rf"cannot reach Redis at redis://127.0.0.1:{port}"
    ):
        connect(f"redis://127.0.0.1:{port}/0")
    assert time.monotonic() - started < 2.0
    with pytest.raises(ConfigurationError, match=r"redis://:\*\*\*@127"):
        RedisStorage(f"redis://:secret@127.0.0.1:{port}/0")


def test_missing_driver_names_the_extra() -> None:
    # In a fresh interpreter where "import redis" fails.
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "from exqueue.errors import ConfigurationError\n"
        "try:\n"
        "    import exqueue_redis\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert 'pip install "exqueue[redis]"' in done.stdout, done.stderr
