"""Live nodes and outcome history through the public Queue, on every backend."""

from __future__ import annotations

from unittest.mock import ANY

import pytest

import exqueue
from exqueue.runtime.observe import backoff_text, minute_of
from exqueue.storage_optional import BACKOFF_TEXT_LIMIT, types_from_json
from tests.support.clock import FakeClock
from tests.support.procapp import wait_until


def test_drain_writes_outcome_history(storage: exqueue.Storage) -> None:
    clock = FakeClock()
    queue = exqueue.Queue(storage, clock=clock, node="hist-node")

    @queue.worker(name="hist.ok")
    def ok() -> None: ...

    @queue.worker(name="hist.bad", max_retries=1, backoff=exqueue.Fixed(1))
    def bad() -> None:
        raise ValueError("no")

    for _ in range(5):
        ok.enqueue()
    bad.enqueue()
    queue.drain()
    clock.advance(61)
    queue.drain()
    rows = {(row.worker, row.minute): row for row in queue.history(minutes=5)}
    first, second = minute_of(clock.now - 61), minute_of(clock.now)
    assert (rows[("hist.ok", first)].succeeded, rows[("hist.ok", first)].failed) == (5, 0)
    assert rows[("hist.ok", first)].run_time >= 0
    assert (rows[("hist.bad", first)].failed, rows[("hist.bad", first)].dead) == (1, 0)
    assert (rows[("hist.bad", second)].failed, rows[("hist.bad", second)].dead) == (0, 1)
    assert [row.worker for row in queue.history(worker="hist.ok")] == ["hist.ok"]
    with pytest.raises(ValueError, match="minutes"):
        queue.history(minutes=0)


def test_async_outcomes_reach_the_history(storage: exqueue.Storage) -> None:
    # Async successes are counted by the finisher threads, in counters of their own.
    clock = FakeClock()
    queue = exqueue.Queue(storage, clock=clock, node="hist-async")

    @queue.worker(name="hist.aok", concurrency=4)
    async def aok() -> None: ...

    @queue.worker(name="hist.abad", max_retries=0)
    async def abad() -> None:
        raise ValueError("no")

    for _ in range(7):
        aok.enqueue()
    abad.enqueue()
    queue.drain()
    rows = {(row.worker, row.minute): row for row in queue.history(minutes=5)}
    minute = minute_of(clock.now)
    assert (rows[("hist.aok", minute)].succeeded, rows[("hist.aok", minute)].failed) == (7, 0)
    assert (rows[("hist.abad", minute)].succeeded, rows[("hist.abad", minute)].dead) == (0, 1)


def test_a_started_node_is_listed_and_leaves_at_stop(storage: exqueue.Storage) -> None:
    queue = exqueue.Queue(storage, node="live-node", lease=3.0, poll_interval=0.05)

    @queue.worker(name="nodes.w", concurrency=3)
    def w() -> None: ...

    @queue.worker(name="nodes.serial", serial=True, max_retries=0)
    def s() -> None: ...

    @queue.worker(
        name="nodes.limited",
        concurrency=2,
        global_limit=4,
        rate_limit="10/m",
        partition="key",
        timeout=2.5,
        backoff=exqueue.Fixed(7),
    )
    async def limited(key: str) -> None: ...

    queue.start()
    try:
        wait_until(lambda: any(n.name == "live-node" for n in queue.nodes()), "the node is listed")
        node = next(n for n in queue.nodes() if n.name == "live-node")
        assert node.workers == {"nodes.w": 3, "nodes.serial": 1, "nodes.limited": 2}
        assert node.pid > 0 and node.host
        # Each type's settings, published so a reader with only the URL knows them.
        assert dict(node.types) == {
            "nodes.w": exqueue.TypeSettings(3, max_attempts=w.max_attempts, backoff=ANY),
            "nodes.serial": exqueue.TypeSettings(1, serial=True, max_attempts=1, backoff=ANY),
            "nodes.limited": exqueue.TypeSettings(
                2,
                is_async=True,
                global_limit=4,
                rate=10,
                per=60.0,
                partitioned=True,
                timeout=2.5,
                max_attempts=limited.max_attempts,
                backoff="Fixed(seconds=7)",
            ),
        }
    finally:
        queue.stop()
    assert all(n.name != "live-node" for n in queue.nodes())


def test_stale_nodes_are_not_live(storage: exqueue.Storage) -> None:
    clock = FakeClock()
    queue = exqueue.Queue(storage, clock=clock, lease=30.0)
    assert isinstance(storage, exqueue.storage.SupportsNodes)
    storage.beat_node(exqueue.NodeInfo("old-node", "h", 1, clock.now, clock.now - 31))
    storage.beat_node(exqueue.NodeInfo("new-node", "h", 2, clock.now, clock.now - 29))
    names = [n.name for n in queue.nodes()]
    assert "new-node" in names and "old-node" not in names


def test_a_backoff_is_published_the_same_by_every_process() -> None:
    class Plain:  # object's repr carries an address that differs per process
        def delay(self, attempt: int) -> float:
            return 1.0

    class Broken(Plain):
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    class Long(Plain):
        def __repr__(self) -> str:
            return "é" * 300

    name = f"{Plain.__module__}.{Plain.__qualname__}"
    assert backoff_text(Plain()) == backoff_text(Plain()) == name
    assert backoff_text(Broken()).endswith("Broken")
    assert backoff_text(exqueue.Exponential(jitter=0.1)) == repr(exqueue.Exponential(jitter=0.1))
    long = backoff_text(Long())
    assert long == "é" * 127 and len(long.encode()) <= BACKOFF_TEXT_LIMIT


def test_damaged_stored_settings_are_left_out_of_a_read() -> None:
    good = exqueue.TypeSettings(2, serial=True, rate=3, per=1.0, max_attempts=2)
    stored = {
        "good": {**good.as_json(), "from_a_later_version": 1},
        "not_an_object": [1, 2],
        "bad_value": {"concurrency": {"x": 1}},
        "half_a_rate": {"rate": 5},
        "defaults": {},
    }
    assert types_from_json(stored) == {"good": good, "defaults": exqueue.TypeSettings()}
    assert types_from_json(None) == {} and types_from_json("x") == {}


def test_settings_the_store_would_refuse_are_left_out_and_the_node_still_beats(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = exqueue.Queue("memory://", node="odd-node", lease=3.0, poll_interval=0.05)

    @queue.worker(name="odd.ok")
    def ok() -> None: ...

    @queue.worker(name="odd.bad")
    def bad() -> None: ...

    bad.max_retries = -1  # changed after registration: 0 attempts, which no store takes
    queue.start()
    try:
        wait_until(lambda: any(n.name == "odd-node" for n in queue.nodes()), "the node is listed")
        (node,) = queue.nodes()
        assert set(node.types) == {"odd.ok"} and set(node.workers) == {"odd.ok", "odd.bad"}
    finally:
        queue.stop()
    assert "not publishing the settings of odd.bad" in caplog.text
