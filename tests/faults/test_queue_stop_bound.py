"""Issue 13 item 12, runtime part: ``Queue.stop(timeout)`` with the storage gone
returns within the timeout plus about one connect timeout, however many jobs
the node holds (it used to retry each release for seconds, one after another).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import exqueue
from exqueue_redis import RedisStorage
from tests.support.procapp import wait_until
from tests.support.redis_servers import RedisServer

pytestmark = pytest.mark.faults

HELD = 8
CONNECT_TIMEOUT = 2.0


def test_queue_stop_with_the_storage_gone_is_bounded(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    release = threading.Event()
    started: list[int] = []
    try:
        storage = RedisStorage(server.url, connect_timeout=CONNECT_TIMEOUT, socket_timeout=2.0)
        queue = exqueue.Queue(storage, lease=30, poll_interval=0.05)

        @queue.worker(name="hold", concurrency=HELD)
        def hold(n: int) -> None:
            started.append(n)
            release.wait(120)

        queue.enqueue_many([hold.call(n) for n in range(HELD)])
        queue.start()
        wait_until(lambda: len(started) == HELD, "every job is running")
        server.kill()
        began = time.monotonic()
        queue.stop(timeout=1)
        took = time.monotonic() - began
    finally:
        release.set()
        server.kill()
    # The timeout, one connect timeout and the release grace, with room for a
    # loaded machine; before, each of the 8 releases retried for 5 s (over 40 s).
    assert took < 1 + CONNECT_TIMEOUT + 2 + 8, f"stop took {took:.1f}s"
