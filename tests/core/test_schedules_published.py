"""Schedules as the live nodes publish them: what a reader with only the storage URL sees.

A node publishes each schedule it fires with its heartbeat (``NodeInfo.schedules``);
``queue.schedules()`` on a queue that registered none (the dashboard's, or
``exqueue schedules --storage``) computes the next fire from those definitions and
the stored last tick. The clock is a :class:`FakeClock` and nodes beat by hand, so
no test sleeps.
"""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from exqueue import NodeInfo, Queue, ScheduleSettings
from exqueue.runtime.config import Ledger
from exqueue.runtime.observe import Observer
from exqueue.storage_optional import schedules_from_json
from exqueue_memory import MemoryStorage
from tests.support.clock import FakeClock

NIGHTLY = ScheduleSettings("app.report", "30 2 * * *", None, "Europe/Stockholm", "skip")


def _app(storage: MemoryStorage, clock: FakeClock, **options: bool) -> Queue:
    """The application: one cron and one interval schedule."""
    queue = Queue(storage, clock=clock, node="app-node", **options)

    @queue.worker(name="app.report")
    def report() -> None: ...

    @queue.worker(name="app.poll")
    def poll(missed: int = 0) -> None: ...

    queue.schedule("nightly", "30 2 * * *", report.call(), tz="Europe/Stockholm")
    queue.schedule("poll", None, poll.call(), every=90, missed="run_once")
    return queue


def _beat(storage: MemoryStorage, queue: Queue) -> NodeInfo:
    """The heartbeat the queue's node would send."""
    node = Observer(queue._node_config(), Ledger()).info()
    storage.beat_node(node)
    return node


def test_a_node_publishes_the_schedules_it_fires_and_a_bare_reader_computes_next_fire() -> None:
    clock = FakeClock(dt.datetime(2026, 3, 28, 12, tzinfo=dt.UTC).timestamp())
    storage = MemoryStorage()
    app = _app(storage, clock)
    node = _beat(storage, app)
    assert dict(node.schedules) == {
        "nightly": NIGHTLY,
        "poll": ScheduleSettings("app.poll", None, 90.0, "UTC", "run_once"),
    }
    app.fire_schedules()  # no stored tick yet: nothing is due, the baseline is set
    clock.advance(200)
    assert app.fire_schedules()  # a poll tick: the stored last tick moves
    _beat(storage, app)  # the next heartbeat keeps the node live

    reader = Queue(storage, clock=clock)  # the storage URL alone: no schedule registered
    seen = {info.name: info for info in reader.schedules()}
    mine = {info.name: info for info in app.schedules()}
    for name in ("nightly", "poll"):
        info = seen[name]
        assert (info.expression, info.zone, info.missed, info.next_fire, info.last_tick) == (
            mine[name].expression,
            mine[name].zone,
            mine[name].missed,
            mine[name].next_fire,
            mine[name].last_tick,
        )
        assert info.live is True and not info.registered and not info.disagree
        assert info.published[0].nodes == ("app-node",)
    # Across the spring-forward night the core's own DST rule applies (02:30 → 03:00).
    assert seen["nightly"].next_fire == dt.datetime(
        2026, 3, 29, 3, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))
    )
    assert seen["poll"].expression == "every 90s" and seen["poll"].last_tick is not None
    assert seen["poll"].to_dict()["published"] == [
        {
            "worker": "app.poll",
            "cron": None,
            "every": 90.0,
            "zone": "UTC",
            "missed": "run_once",
            "nodes": ["app-node"],
        }
    ]


def test_a_node_that_fires_no_schedules_publishes_none() -> None:
    storage = MemoryStorage()
    node = _beat(storage, _app(storage, FakeClock(), run_schedules=False))
    assert dict(node.schedules) == {}


def test_nodes_that_disagree_are_shown_and_the_earliest_tick_is_next() -> None:
    clock = FakeClock(dt.datetime(2026, 6, 1, 0, 0, 10, tzinfo=dt.UTC).timestamp())
    storage = MemoryStorage()
    every_minute = ScheduleSettings("app.poll", "* * * * *")
    hourly = ScheduleSettings("app.poll", "0 * * * *")
    for name, definition in (("a", hourly), ("b", every_minute), ("c", hourly)):
        storage.beat_node(
            NodeInfo(name, "h", 1, clock.now, clock.now, {}, 0, {}, {"s": definition})
        )
    (info,) = Queue(storage, clock=clock).schedules()
    assert info.disagree and [p.nodes for p in info.published] == [("a", "c"), ("b",)]
    assert info.expression == "0 * * * *"  # what most nodes publish
    assert info.next_fire == dt.datetime(2026, 6, 1, 0, 1, tzinfo=dt.UTC)  # node b's next tick


def test_a_schedule_no_live_node_publishes_is_said_so() -> None:
    clock = FakeClock()
    storage = MemoryStorage()
    storage.pause_schedule("gone", True)  # stored by an app that no longer has it
    storage.beat_node(NodeInfo("stale", "h", 1, 0.0, clock.now - 3600, {}, 0, {}, {"old": NIGHTLY}))
    # A live node of an exqueue from before settings were published: it may fire anything.
    storage.beat_node(NodeInfo("older", "h", 2, clock.now, clock.now, {"app.report": 1}))
    (info,) = Queue(storage, clock=clock).schedules()
    assert (info.name, info.expression, info.next_fire, info.paused) == ("gone", None, None, True)
    assert info.live is False and info.silent_nodes == ("older",)


def test_damaged_stored_definitions_are_left_out_of_a_read() -> None:
    stored = {
        "good": {**NIGHTLY.as_json(), "from_a_later_version": 1},
        "not_an_object": "x",
        "both": {"worker": "w", "cron": "* * * * *", "every": 5},
        "bad_zone": {**NIGHTLY.as_json(), "zone": "Mars/Base"},
        "bad_type": {"worker": "w", "every": "soon"},
    }
    assert schedules_from_json(stored) == {"good": NIGHTLY}
    assert schedules_from_json(None) == {} and schedules_from_json([1]) == {}


def test_a_bad_definition_is_refused_with_its_name_and_nothing_is_stored() -> None:
    storage = MemoryStorage()
    bad = ScheduleSettings("w", "61 * * * *")
    with pytest.raises(ValueError, match=r"schedule 'x': invalid cron expression '61 \* \* \* \*'"):
        storage.beat_node(NodeInfo("n", "h", 1, 0.0, 0.0, {}, 0, {}, {"x": bad}))
    assert storage.nodes() == []


def test_a_definition_the_store_would_refuse_is_left_out_and_the_node_still_beats(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exqueue.runtime import observe

    storage = MemoryStorage()
    app = _app(storage, FakeClock())
    real = observe.definition_of
    # A schedule whose zone key takes more bytes than a store keeps.
    monkeypatch.setattr(
        observe,
        "definition_of",
        lambda s: real(s) if s.name != "poll" else ScheduleSettings(s.worker, None, 9.0, "é" * 200),
    )
    with caplog.at_level(logging.WARNING, "exqueue"):
        node = _beat(storage, app)
    assert set(node.schedules) == {"nightly"} and "schedule poll" in caplog.text
    assert [n.name for n in storage.nodes()] == ["app-node"]
