"""Area: live nodes and outcome history (capabilities ``NODES`` and ``HISTORY``).

A node's heartbeat replaces its stored fields (its published worker type
settings and schedule definitions too, which round-trip exactly); nodes are listed by name and
dropped by ``seen_at`` (strictly older than ``before``) or by name. History
counts are added, never overwritten: within one batch, across batches and
across racing threads, a ``(worker, minute)`` row ends holding the sum of
every count given for it; rows are read from ``since`` on in ``(minute,
worker)`` order and pruned strictly before ``before``. Bad input stores nothing.
"""

from __future__ import annotations

import threading

from hypothesis import settings as Settings

from conformance.base import NOW, Check, StorageFactory, expect, implements, opened, unique
from exqueue.storage import (
    HISTORY,
    NODES,
    PERSISTENT,
    HistoryCount,
    NodeInfo,
    ScheduleSettings,
    SupportsHistory,
    SupportsNodes,
    TypeSettings,
)

AREA = "nodes and history"
NODES_API = "a backend declaring 'nodes' implements beat_node, nodes and drop_nodes"
HISTORY_API = "a backend declaring 'history' implements add_history, history and prune_history"
MINUTE = int(NOW) // 60 * 60


def _mine(store: SupportsNodes, names: set[str]) -> list[NodeInfo]:
    return [node for node in store.nodes() if node.name in names]


def check_node_beat(factory: StorageFactory, settings: Settings) -> None:
    """A heartbeat stores the node, replacing every field; nodes are listed by name."""
    with opened(factory) as (_, storage):
        store = implements(storage, SupportsNodes, NODES_API)
        base = unique("node")
        b, a = f"{base}-b", f"{base}-a"
        workers = {"app.send": 4, "app.other": 1}
        store.beat_node(NodeInfo(b, "host-1", 11, NOW, NOW, workers, 2))
        workers["app.send"] = 99  # the caller's mapping changes after the call
        store.beat_node(NodeInfo(a, "host-2", 12, NOW, NOW + 1, {}, 0))
        listed = _mine(store, {a, b})
        expect(
            [node.name for node in listed] == [a, b],
            "nodes() lists every stored node, ordered by name",
            [node.name for node in listed],
        )
        expect(
            listed[1] == NodeInfo(b, "host-1", 11, NOW, NOW, {"app.send": 4, "app.other": 1}, 2),
            "a node is stored with every field as given at its heartbeat",
            listed[1],
        )
        store.beat_node(NodeInfo(b, "host-1", 11, NOW, NOW + 10, {"app.send": 5}, 0))
        listed = _mine(store, {a, b})
        expect(
            len(listed) == 2
            and listed[1] == NodeInfo(b, "host-1", 11, NOW, NOW + 10, {"app.send": 5}, 0),
            "a second heartbeat of a node replaces its fields (one node per name)",
            listed,
        )


#: Settings with every field away from its default, so a field dropped or swapped shows.
FULL = TypeSettings(
    concurrency=3,
    serial=False,
    is_async=True,
    global_limit=7,
    rate=100,
    per=60.0,
    partitioned=True,
    timeout=2.5,
    max_attempts=4,
    backoff="Exponential(base=1.0, factor=2.0, cap=3600.0, jitter=0.1) <é>",
)
SERIAL = TypeSettings(concurrency=1, serial=True, max_attempts=1)


def check_node_types(factory: StorageFactory, settings: Settings) -> None:
    """A node's published worker type settings round-trip, and a heartbeat replaces them."""
    with opened(factory) as (_, storage):
        store = implements(storage, SupportsNodes, NODES_API)
        name = unique("types")
        types = {"app.send": FULL, "app.serial": SERIAL, "app.plain": TypeSettings()}
        store.beat_node(NodeInfo(name, "h", 1, NOW, NOW, {"app.send": 3}, 0, types))
        types["app.send"] = SERIAL  # the caller's mapping changes after the call
        (node,) = _mine(store, {name})
        expected = {"app.send": FULL, "app.serial": SERIAL, "app.plain": TypeSettings()}
        expect(
            dict(node.types) == expected,
            "a node's types are stored with every setting as given at its heartbeat",
            dict(node.types),
        )
        expect(
            all(isinstance(s, TypeSettings) for s in node.types.values()),
            "nodes() gives each type's settings as a TypeSettings",
            [type(s).__name__ for s in node.types.values()],
        )
        store.beat_node(NodeInfo(name, "h", 1, NOW, NOW + 1, {}, 0, {"app.serial": FULL}))
        (node,) = _mine(store, {name})
        expect(
            dict(node.types) == {"app.serial": FULL},
            "a second heartbeat replaces the node's types (none of the old ones are kept)",
            dict(node.types),
        )
        store.beat_node(NodeInfo(name, "h", 1, NOW, NOW + 2))
        (node,) = _mine(store, {name})
        expect(dict(node.types) == {}, "a node that publishes no types has none", node.types)


#: Definitions with every field away from its default (and one of each kind).
CRON = ScheduleSettings("app.report", "30 2 * * 1-5", None, "Europe/Stockholm", "run_once")
EVERY = ScheduleSettings("app.poll", None, 2.5, "America/New_York", "skip")


def check_node_schedules(factory: StorageFactory, settings: Settings) -> None:
    """A node's published schedule definitions round-trip, and a heartbeat replaces them."""
    with opened(factory) as (_, storage):
        store = implements(storage, SupportsNodes, NODES_API)
        name = unique("scheds")
        given = {"nightly <é>": CRON, "poll": EVERY}
        store.beat_node(NodeInfo(name, "h", 1, NOW, NOW, {}, 0, {}, given))
        given["poll"] = CRON  # the caller's mapping changes after the call
        (node,) = _mine(store, {name})
        expect(
            dict(node.schedules) == {"nightly <é>": CRON, "poll": EVERY},
            "a node's schedules are stored with every field as given at its heartbeat",
            dict(node.schedules),
        )
        expect(
            all(isinstance(s, ScheduleSettings) for s in node.schedules.values()),
            "nodes() gives each schedule's definition as a ScheduleSettings",
            [type(s).__name__ for s in node.schedules.values()],
        )
        store.beat_node(NodeInfo(name, "h", 1, NOW, NOW + 1, {}, 0, {}, {"poll": CRON}))
        (node,) = _mine(store, {name})
        expect(
            dict(node.schedules) == {"poll": CRON},
            "a second heartbeat replaces the node's schedules (none of the old ones are kept)",
            dict(node.schedules),
        )
        store.beat_node(NodeInfo(name, "h", 1, NOW, NOW + 2))
        (node,) = _mine(store, {name})
        expect(dict(node.schedules) == {}, "a node that fires no schedule has none", node.schedules)


def check_node_drop(factory: StorageFactory, settings: Settings) -> None:
    """drop_nodes removes nodes seen strictly before ``before``, and the node named."""
    with opened(factory) as (_, storage):
        store = implements(storage, SupportsNodes, NODES_API)
        base = unique("drop")
        old, edge, new, named = (f"{base}-{n}" for n in ("old", "edge", "new", "named"))
        store.beat_node(NodeInfo(old, "h", 1, NOW, NOW - 100))
        store.beat_node(NodeInfo(edge, "h", 2, NOW, NOW - 50))
        store.beat_node(NodeInfo(new, "h", 3, NOW, NOW))
        store.beat_node(NodeInfo(named, "h", 4, NOW, NOW))
        everything = {old, edge, new, named}
        expect(store.drop_nodes() == [], "drop_nodes with no argument removes nothing")
        gone = store.drop_nodes(before=NOW - 50)
        expect(gone == [old], "drop_nodes(before=T) removes nodes with seen_at < T only", gone)
        gone = store.drop_nodes(name=named)
        expect(gone == [named], "drop_nodes(name=N) removes that node", gone)
        expect(store.drop_nodes(name=named) == [], "dropping a missing node removes nothing")
        left = [node.name for node in _mine(store, everything)]
        expect(left == sorted([edge, new]), "the other nodes are kept", left)


def check_node_bad_input(factory: StorageFactory, settings: Settings) -> None:
    """An invalid node raises ValueError and stores nothing."""
    with opened(factory) as (_, storage):
        store = implements(storage, SupportsNodes, NODES_API)
        name = unique("bad")
        for bad in (
            NodeInfo("", "h", 1, NOW, NOW),
            NodeInfo("x" * 256, "h", 1, NOW, NOW),
            NodeInfo(name, "h", -1, NOW, NOW),
            NodeInfo(name, "h", 1, NOW, NOW, {"w": -2}),
            NodeInfo(name, "h", 1, NOW, NOW, {}, -1),
            NodeInfo(name, "h", 1, NOW, NOW, {}, 0, {"": TypeSettings()}),
            NodeInfo(name, "h", 1, NOW, NOW, {}, 0, {"w": TypeSettings(concurrency=-1)}),
            NodeInfo(name, "h", 1, NOW, NOW, {}, 0, {"w": TypeSettings(max_attempts=0)}),
            NodeInfo(name, "h", 1, NOW, NOW, {}, 0, {"w": TypeSettings(rate=5)}),
            NodeInfo(name, "h", 1, NOW, NOW, {}, 0, {"w": TypeSettings(global_limit=0)}),
            NodeInfo(name, "h", 1, NOW, NOW, {}, 0, {"w": TypeSettings(timeout=float("nan"))}),
            NodeInfo(name, "h", 1, NOW, NOW, {}, 0, {"w": TypeSettings(backoff="x" * 256)}),
            NodeInfo(name, "h", 1, NOW, NOW, {}, 0, {"w": {"serial": True}}),  # type: ignore[dict-item]
            NodeInfo(name, "h", 1, NOW, NOW, {}, 0, {}, {"": EVERY}),
            NodeInfo(name, "h", 1, NOW, NOW, {}, 0, {}, {"s": ScheduleSettings("w")}),
            NodeInfo(name, "h", 1, NOW, NOW, {}, 0, {}, {"s": ScheduleSettings("w", "* * * *")}),
            NodeInfo(
                name, "h", 1, NOW, NOW, {}, 0, {}, {"s": ScheduleSettings("w", "* * * * *", 1.0)}
            ),
            NodeInfo(name, "h", 1, NOW, NOW, {}, 0, {}, {"s": ScheduleSettings("w", None, -1.0)}),
            NodeInfo(
                name,
                "h",
                1,
                NOW,
                NOW,
                {},
                0,
                {},
                {"s": ScheduleSettings("w", None, 1.0, "Mars/Base")},
            ),
            NodeInfo(
                name,
                "h",
                1,
                NOW,
                NOW,
                {},
                0,
                {},
                {"s": ScheduleSettings("w", None, 1.0, missed="all")},
            ),
            NodeInfo(name, "h", 1, NOW, NOW, {}, 0, {}, {"s": {"cron": "* * * * *"}}),  # type: ignore[dict-item]
        ):
            try:
                store.beat_node(bad)
            except ValueError:
                pass
            else:
                expect(False, "beat_node refuses an invalid node with ValueError", bad)
        stored = [n.name for n in store.nodes() if n.name in (name, "", "x" * 256)]
        expect(stored == [], "a refused node is not stored", stored)


def _rows(store: SupportsHistory, worker: str) -> list[HistoryCount]:
    return store.history(since=0, worker=worker)


def check_history_adds(factory: StorageFactory, settings: Settings) -> None:
    """History counts are added to their (worker, minute) row, within and across batches."""
    with opened(factory) as (_, storage):
        store = implements(storage, SupportsHistory, HISTORY_API)
        worker = unique("hist")
        store.add_history(
            [
                HistoryCount(worker, MINUTE, 1, 0, 0, 0.25),
                HistoryCount(worker, MINUTE, 2, 1, 0, 0.5),
                HistoryCount(worker, MINUTE + 60, 0, 0, 1, 0.0),
            ]
        )
        store.add_history([HistoryCount(worker, MINUTE, 1, 1, 1, 1.0)])
        store.add_history([])
        rows = _rows(store, worker)
        expect(
            rows
            == [
                HistoryCount(worker, MINUTE, 4, 2, 1, 1.75),
                HistoryCount(worker, MINUTE + 60, 0, 0, 1, 0.0),
            ],
            "each row holds the sum of every count added for its (worker, minute)",
            rows,
        )


def check_history_read(factory: StorageFactory, settings: Settings) -> None:
    """history(since, worker) reads rows from ``since`` on, by (minute, worker)."""
    with opened(factory) as (_, storage):
        store = implements(storage, SupportsHistory, HISTORY_API)
        base = unique("read")
        a, b = f"{base}-a", f"{base}-b"
        store.add_history(
            [
                HistoryCount(b, MINUTE + 120, 1),
                HistoryCount(a, MINUTE + 120, 2),
                HistoryCount(a, MINUTE, 3),
                HistoryCount(b, MINUTE + 60, 4),
            ]
        )
        rows = [
            (r.minute, r.worker, r.succeeded)
            for r in store.history(since=MINUTE + 60)
            if r.worker in (a, b)
        ]
        expected = [(MINUTE + 60, b, 4), (MINUTE + 120, a, 2), (MINUTE + 120, b, 1)]
        expect(rows == expected, "rows with minute >= since, ordered by (minute, worker)", rows)
        only = [(r.minute, r.succeeded) for r in store.history(since=0, worker=a)]
        expect(only == [(MINUTE, 3), (MINUTE + 120, 2)], "worker= keeps that worker's rows", only)


def check_history_prune(factory: StorageFactory, settings: Settings) -> None:
    """prune_history removes the rows of minutes strictly before ``before``."""
    with opened(factory) as (_, storage):
        store = implements(storage, SupportsHistory, HISTORY_API)
        worker = unique("prune")
        store.add_history([HistoryCount(worker, MINUTE + 60 * i, 1) for i in range(4)])
        removed = store.prune_history(MINUTE + 120)
        expect(removed >= 2, "prune_history returns how many rows it removed", removed)
        left = [r.minute for r in _rows(store, worker)]
        expect(left == [MINUTE + 120, MINUTE + 180], "rows before `before` are gone", left)


def check_history_bad_input(factory: StorageFactory, settings: Settings) -> None:
    """A batch with an invalid count raises ValueError and stores none of it."""
    with opened(factory) as (_, storage):
        store = implements(storage, SupportsHistory, HISTORY_API)
        worker = unique("badh")
        for bad in (
            HistoryCount(worker, MINUTE + 1, 1),
            HistoryCount(worker, MINUTE, -1),
            HistoryCount("", MINUTE, 1),
            HistoryCount(worker, MINUTE, 0, 0, 0, -1.0),
        ):
            try:
                store.add_history([HistoryCount(worker, MINUTE, 1), bad])
            except ValueError:
                pass
            else:
                expect(False, "add_history refuses an invalid count with ValueError", bad)
        rows = _rows(store, worker)
        expect(rows == [], "a refused batch stores none of its counts", rows)


def check_history_threads(factory: StorageFactory, settings: Settings) -> None:
    """Threads adding to the same rows at once lose no count."""
    with opened(factory) as (_, storage):
        store = implements(storage, SupportsHistory, HISTORY_API)
        worker = unique("race")
        threads, rounds = 4, 25
        start = threading.Barrier(threads)
        errors: list[BaseException] = []

        def adder() -> None:
            try:
                start.wait()
                for _ in range(rounds):
                    store.add_history(
                        [
                            HistoryCount(worker, MINUTE, 1, 0, 0, 0.5),
                            HistoryCount(worker, MINUTE + 60, 0, 1),
                        ]
                    )
            except BaseException as exc:  # reported below
                errors.append(exc)

        pool = [threading.Thread(target=adder, daemon=True) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(120)
        expect(not errors, "racing add_history calls succeed", errors[:3])
        total = threads * rounds
        rows = _rows(store, worker)
        expect(
            rows
            == [
                HistoryCount(worker, MINUTE, total, 0, 0, 0.5 * total),
                HistoryCount(worker, MINUTE + 60, 0, total, 0, 0.0),
            ],
            "racing adds to one row all count",
            rows,
        )


def check_observe_persisted(factory: StorageFactory, settings: Settings) -> None:
    """PERSISTENT: nodes and history survive close and reopen."""
    with opened(factory) as (session, storage):
        if PERSISTENT not in storage.capabilities:
            return
        name = unique("keep")
        caps = storage.capabilities
        if NODES in caps:
            node = NodeInfo(name, "h", 1, NOW, NOW, {"w": 1}, 0, {"w": FULL}, {"s": CRON})
            implements(storage, SupportsNodes, NODES_API).beat_node(node)
        if HISTORY in caps:
            implements(storage, SupportsHistory, HISTORY_API).add_history(
                [HistoryCount(name, MINUTE, 3)]
            )
        reopened = session.reopen()
        if NODES in caps:
            kept = _mine(implements(reopened, SupportsNodes, NODES_API), {name})
            expect(len(kept) == 1, "a node survives a reopen", kept)
            expect(kept == [node], "a node survives a reopen with every field", kept)
        if HISTORY in caps:
            rows = _rows(implements(reopened, SupportsHistory, HISTORY_API), name)
            expect(rows == [HistoryCount(name, MINUTE, 3)], "history survives a reopen", rows)


CHECKS = [
    Check("node_beat", NODES, check_node_beat, AREA),
    Check("node_types", NODES, check_node_types, AREA),
    Check("node_schedules", NODES, check_node_schedules, AREA),
    Check("node_drop", NODES, check_node_drop, AREA),
    Check("node_bad_input", NODES, check_node_bad_input, AREA),
    Check("history_adds", HISTORY, check_history_adds, AREA),
    Check("history_read", HISTORY, check_history_read, AREA),
    Check("history_prune", HISTORY, check_history_prune, AREA),
    Check("history_bad_input", HISTORY, check_history_bad_input, AREA),
    Check("history_threads", HISTORY, check_history_threads, AREA),
    Check("observe_persisted", None, check_observe_persisted, AREA),
]
