"""Issue 13 item 15: a node whose clock is off from the storage server's neither
claims nor recovers, says so naming the skew, and goes on once the clocks agree.

Each queue's clock is injected (``Queue(clock=..., check_clock=True)``; the
real ``time.time`` is checked by default) and set 60 s off, against
the real servers that have a clock (PostgreSQL, MariaDB, Redis). Before, a fast
node took other nodes' live jobs as expired and ran them again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import exqueue
from exqueue.storage import RUNNING, SERVER_CLOCK, WAITING, NewJob, Storage
from tests.support.backends import BackendHandle, backend_factory

LEASE = 3.0  # skew above 0.75 s stops claims; the heartbeat runs every second


@pytest.fixture(params=["postgres", "mysql", "redis"])
def storage(request: Any, tmp_path: Path) -> Iterator[Storage]:
    handle = BackendHandle(request.param, backend_factory(request.param, tmp_path))
    opened = handle.open()
    assert SERVER_CLOCK in opened.capabilities
    yield opened
    handle.close_all()


def skewed_queue(storage: Storage, offset: list[float]) -> exqueue.Queue:
    return exqueue.Queue(
        storage,
        lease=LEASE,
        node="skewed",
        poll_interval=0.05,
        clock=lambda: time.time() + offset[0],
        check_clock=True,  # an injected clock is checked only when asked
    )


def test_a_fast_node_leaves_live_jobs_alone_until_its_clock_agrees(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    now = time.time()
    storage.enqueue([NewJob(f"live{n}", "w", b"[[], {}]", now, now, 3) for n in range(4)])
    # Another node holds these four, leased for 30 s of real time.
    live = storage.claim("w", 4, now=now, owner="other", token="t", lease_until=now + 30)
    assert len(live) == 4
    storage.enqueue([NewJob("new", "w", b"[[], {}]", now, now, 3)])
    ran: list[str] = []
    done = threading.Event()
    offset = [60.0]
    queue = skewed_queue(storage, offset)

    @queue.worker(name="w")
    def w() -> None:
        ran.append("x")
        done.set()

    with caplog.at_level(logging.ERROR, logger="exqueue"):
        queue.start()
        try:
            time.sleep(3 * LEASE)  # a recovery pass would have run twice by now
            assert ran == []
            running = storage.list_jobs(state=RUNNING)
            assert {r.id for r in running} == {f"live{n}" for n in range(4)}
            assert all(r.lease_token == "t" for r in running)
            assert [r.id for r in storage.list_jobs(state=WAITING)] == ["new"]
            offset[0] = 0.0
            assert done.wait(30), "the node did not claim once its clock agreed"
        finally:
            queue.stop(timeout=5)
    errors = [r.getMessage() for r in caplog.records if "clock" in r.getMessage()]
    assert any("60." in m and "ahead of" in m for m in errors), errors
    assert ran == ["x"]


def test_a_slow_node_says_its_clock_is_behind(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    offset = [-60.0]
    queue = skewed_queue(storage, offset)
    ran = threading.Event()

    @queue.worker(name="w")
    def w() -> None:
        ran.set()

    with caplog.at_level(logging.ERROR, logger="exqueue"):
        queue.start()
        try:
            w.enqueue()  # stamped with the node's clock, so due at once to the node
            assert not ran.wait(2 * LEASE)
        finally:
            queue.stop(timeout=5)
    errors = [r.getMessage() for r in caplog.records if "clock" in r.getMessage()]
    assert any("behind" in m and "60." in m for m in errors), errors


def test_a_clock_moved_by_hand_is_not_checked_unless_asked(storage: Storage) -> None:
    """A test's clock is not a wall clock: by default only ``time.time`` is compared."""
    assert exqueue.Queue(storage).check_clock is True
    queue = exqueue.Queue(storage, clock=lambda: 1_700_000_000.0)
    assert queue.check_clock is False

    @queue.worker(name="w")
    def w() -> None:
        pass

    w.enqueue()
    assert queue.drain(timeout=30) == 1
