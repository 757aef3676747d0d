"""MemoryStorage's live nodes and outcome history (capabilities ``NODES`` and ``HISTORY``).

Both live in dicts behind one lock of their own: neither touches a job, so
they never need the jobs' lock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from types import MappingProxyType

from exqueue.storage import HistoryCount, NodeInfo, history_problem, node_problem


class MemoryObserve:
    """Nodes and history in dicts; a base class of ``MemoryStorage``."""

    def _observe_lock(self) -> threading.Lock:
        lock: threading.Lock | None = self.__dict__.get("_observe_lock_")
        if lock is None:
            lock = self.__dict__.setdefault("_observe_lock_", threading.Lock())
        return lock

    def _nodes(self) -> dict[str, NodeInfo]:
        nodes: dict[str, NodeInfo] = self.__dict__.setdefault("_node_infos", {})
        return nodes

    def _history(self) -> dict[tuple[int, str], HistoryCount]:
        rows: dict[tuple[int, str], HistoryCount] = self.__dict__.setdefault("_history_rows", {})
        return rows

    def beat_node(self, node: NodeInfo) -> None:
        problem = node_problem(node)
        if problem is not None:
            raise ValueError(f"{problem}; nothing was stored")
        # A copy: the caller may change its mapping after the call.
        stored = replace(
            node,
            workers=MappingProxyType(dict(node.workers)),
            types=MappingProxyType(dict(node.types)),
            schedules=MappingProxyType(dict(node.schedules)),
        )
        with self._observe_lock():
            self._nodes()[node.name] = stored

    def nodes(self) -> list[NodeInfo]:
        with self._observe_lock():
            nodes = self._nodes()
            return [nodes[name] for name in sorted(nodes)]

    def drop_nodes(self, *, before: float | None = None, name: str | None = None) -> list[str]:
        with self._observe_lock():
            nodes = self._nodes()
            gone = [
                node.name
                for node in nodes.values()
                if node.name == name or (before is not None and node.seen_at < before)
            ]
            for gone_name in gone:
                del nodes[gone_name]
            return sorted(gone)

    def add_history(self, counts: Sequence[HistoryCount]) -> None:
        for count in counts:
            problem = history_problem(count)
            if problem is not None:
                raise ValueError(f"{problem}; nothing was stored")
        with self._observe_lock():
            rows = self._history()
            for count in counts:
                key = (count.minute, count.worker)
                old = rows.get(key)
                if old is None:
                    rows[key] = replace(count, run_time=float(count.run_time))
                else:
                    rows[key] = HistoryCount(
                        count.worker,
                        count.minute,
                        old.succeeded + count.succeeded,
                        old.failed + count.failed,
                        old.dead + count.dead,
                        old.run_time + count.run_time,
                    )

    def history(self, *, since: int, worker: str | None = None) -> list[HistoryCount]:
        with self._observe_lock():
            return [
                row
                for key, row in sorted(self._history().items())
                if key[0] >= since and (worker is None or row.worker == worker)
            ]

    def prune_history(self, before: int) -> int:
        with self._observe_lock():
            rows = self._history()
            old = [key for key in rows if key[0] < before]
            for key in old:
                del rows[key]
            return len(old)
