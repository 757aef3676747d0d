"""The nodes-and-history area must catch broken backends: a test of the checks.

Each backend here is the memory backend with one realistic violation of a
node or history rule; the area's checks must reject each (the check named for
it must be among those that fail), and pass the memory backend itself.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import pytest

from conformance import run_suite
from conformance.observe import CHECKS
from conformance.profiles import get_settings
from exqueue.storage import HistoryCount, NodeInfo, node_problem
from exqueue_memory import MemoryStorage

NAMES = [check.name for check in CHECKS]
SETTINGS = get_settings("ci")


class KeepsFirstBeat(MemoryStorage):
    """Registers a node once: later heartbeats change nothing."""

    def beat_node(self, node: NodeInfo) -> None:
        if node.name not in self._nodes():
            super().beat_node(node)


class KeepsCallersMapping(MemoryStorage):
    """Stores the caller's ``workers`` mapping itself, so later edits show."""

    def beat_node(self, node: NodeInfo) -> None:
        super().beat_node(node)
        self._nodes()[node.name] = node


class DropsTypes(MemoryStorage):
    """Stores a node without its published worker type settings (as a backend that
    never persisted the new field would)."""

    def beat_node(self, node: NodeInfo) -> None:
        super().beat_node(replace(node, types={}))


class MangleTypes(MemoryStorage):
    """Round-trips each type's settings through a layout that loses ``is_async`` and
    swaps ``rate`` and ``global_limit``."""

    def nodes(self) -> list[NodeInfo]:
        return [
            replace(
                node,
                types={
                    name: replace(s, is_async=False, rate=s.global_limit, global_limit=s.rate)
                    for name, s in node.types.items()
                },
            )
            for node in super().nodes()
        ]


class KeepsOldTypes(MemoryStorage):
    """Merges a heartbeat's types into the stored ones instead of replacing them."""

    def beat_node(self, node: NodeInfo) -> None:
        old = self._nodes().get(node.name)
        merged = {**(old.types if old is not None else {}), **node.types}
        super().beat_node(replace(node, types=merged))


class ChecksOldFieldsOnly(MemoryStorage):
    """Checks a node as before types existed: bad settings are stored."""

    def beat_node(self, node: NodeInfo) -> None:
        problem = node_problem(replace(node, types={}))
        if problem is not None:
            raise ValueError(problem)
        with self._observe_lock():
            self._nodes()[node.name] = replace(node, types=dict(node.types))


class DropsSchedules(MemoryStorage):
    """Stores a node without its published schedule definitions."""

    def beat_node(self, node: NodeInfo) -> None:
        super().beat_node(replace(node, schedules={}))


class MangleSchedules(MemoryStorage):
    """Reads each definition back in UTC with the default missed policy (a layout
    that kept only the expression)."""

    def nodes(self) -> list[NodeInfo]:
        return [
            replace(
                node,
                schedules={
                    name: replace(s, zone="UTC", missed="skip")
                    for name, s in node.schedules.items()
                },
            )
            for node in super().nodes()
        ]


class KeepsOldSchedules(MemoryStorage):
    """Merges a heartbeat's schedules into the stored ones instead of replacing them."""

    def beat_node(self, node: NodeInfo) -> None:
        old = self._nodes().get(node.name)
        merged = {**(old.schedules if old is not None else {}), **node.schedules}
        super().beat_node(replace(node, schedules=merged))


class ChecksNoSchedules(MemoryStorage):
    """Checks a node as before schedules were published: bad definitions are stored."""

    def beat_node(self, node: NodeInfo) -> None:
        problem = node_problem(replace(node, schedules={}))
        if problem is not None:
            raise ValueError(problem)
        with self._observe_lock():
            self._nodes()[node.name] = replace(node, schedules=dict(node.schedules))


class DropsInclusive(MemoryStorage):
    """Drops nodes seen at ``before`` too (``<=`` for ``<``)."""

    def drop_nodes(self, *, before: float | None = None, name: str | None = None) -> list[str]:
        return super().drop_nodes(before=None if before is None else before + 1e-6, name=name)


class StoresBadNodes(MemoryStorage):
    """Skips the input check."""

    def beat_node(self, node: NodeInfo) -> None:
        self._nodes()[node.name] = node


class OverwritesHistory(MemoryStorage):
    """Sets a row to the last count given instead of adding to it."""

    def add_history(self, counts: Sequence[HistoryCount]) -> None:
        for count in counts:
            self._history().pop((count.minute, count.worker), None)
            super().add_history([count])


class ReadsUnordered(MemoryStorage):
    """Returns rows by worker first, then minute."""

    def history(self, *, since: int, worker: str | None = None) -> list[HistoryCount]:
        rows = super().history(since=since, worker=worker)
        return sorted(rows, key=lambda r: (r.worker, r.minute))


class PrunesInclusive(MemoryStorage):
    """Removes the minute at ``before`` too."""

    def prune_history(self, before: int) -> int:
        return super().prune_history(before + 60)


class HalfStoresBadBatch(MemoryStorage):
    """Checks each count as it adds it: a bad one leaves the earlier ones stored."""

    def add_history(self, counts: Sequence[HistoryCount]) -> None:
        for count in counts:
            super().add_history([count])


class ReadModifyWrite(MemoryStorage):
    """Reads a row, then writes the sum outside the lock: racing adds are lost."""

    def add_history(self, counts: Sequence[HistoryCount]) -> None:
        for count in counts:
            key = (count.minute, count.worker)
            with self._observe_lock():
                old = self._history().get(key)
            time.sleep(0.0005)
            new = (
                count
                if old is None
                else replace(
                    old,
                    succeeded=old.succeeded + count.succeeded,
                    failed=old.failed + count.failed,
                    dead=old.dead + count.dead,
                    run_time=old.run_time + count.run_time,
                )
            )
            with self._observe_lock():
                self._history()[key] = new


@pytest.mark.parametrize(
    ("broken", "caught_by"),
    [
        (KeepsFirstBeat, "node_beat"),
        (KeepsCallersMapping, "node_beat"),
        (DropsTypes, "node_types"),
        (MangleTypes, "node_types"),
        (KeepsOldTypes, "node_types"),
        (ChecksOldFieldsOnly, "node_bad_input"),
        (DropsSchedules, "node_schedules"),
        (MangleSchedules, "node_schedules"),
        (KeepsOldSchedules, "node_schedules"),
        (ChecksNoSchedules, "node_bad_input"),
        (DropsInclusive, "node_drop"),
        (StoresBadNodes, "node_bad_input"),
        (OverwritesHistory, "history_adds"),
        (ReadsUnordered, "history_read"),
        (PrunesInclusive, "history_prune"),
        (HalfStoresBadBatch, "history_bad_input"),
        (ReadModifyWrite, "history_threads"),
    ],
)
def test_broken_observe_backend_is_caught(broken: type[MemoryStorage], caught_by: str) -> None:
    failures = run_suite(broken, SETTINGS, only=NAMES)
    assert caught_by in failures, f"{broken.__name__} passed {caught_by}: {sorted(failures)}"
    assert str(failures[caught_by]).startswith("rule broken: ")


def test_memory_backend_passes() -> None:
    assert run_suite(MemoryStorage, SETTINGS, only=NAMES) == {}
