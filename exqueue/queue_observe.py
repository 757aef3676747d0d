"""``queue.nodes()`` and ``queue.history()``: the live worker processes and the
per-minute outcome counts, read from the store (capabilities ``NODES`` and
``HISTORY``; see :mod:`exqueue.runtime.observe` for how nodes write them)."""

from __future__ import annotations

from collections.abc import Callable

from exqueue.errors import ConfigurationError
from exqueue.runtime.observe import HISTORY_KEEP, minute_of, stale_after
from exqueue.storage import (
    HISTORY,
    NODES,
    HistoryCount,
    NodeInfo,
    Storage,
    SupportsHistory,
    SupportsNodes,
)


class ObserveMethods:
    """The node and history reads of :class:`exqueue.Queue` (a base class of it)."""

    storage: Storage
    clock: Callable[[], float]
    lease: float

    def nodes(self) -> list[NodeInfo]:
        """The live nodes (seen within a lease: three heartbeats), ordered by name."""
        storage = self.storage
        if NODES not in storage.capabilities or not isinstance(storage, SupportsNodes):
            raise ConfigurationError(f"{type(storage).__name__} does not keep live nodes")
        oldest = self.clock() - stale_after(self.lease)
        return [node for node in storage.nodes() if node.seen_at >= oldest]

    def history(
        self, *, minutes: int = HISTORY_KEEP // 60, worker: str | None = None
    ) -> list[HistoryCount]:
        """Outcome counts per worker type and minute over the last ``minutes`` minutes
        (the current minute included), by ``(minute, worker)``."""
        storage = self.storage
        if HISTORY not in storage.capabilities or not isinstance(storage, SupportsHistory):
            raise ConfigurationError(f"{type(storage).__name__} does not keep outcome history")
        if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 1:
            raise ValueError(f"minutes must be a positive int, not {minutes!r}")
        since = minute_of(self.clock()) - 60 * (minutes - 1)
        return storage.history(since=since, worker=worker)
