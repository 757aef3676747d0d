"""Backend handles: open a storage of one backend over a fresh, isolated location.

``backend.open()`` gives a storage over a fresh, isolated location (a temporary
SQLite file, a unique table prefix, a unique Redis namespace); ``backend.reopen()``
gives a new storage object over the same data, as a restarted process would.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from exqueue.storage import PERSISTENT, Storage
from tests.support import services

if TYPE_CHECKING:
    from exqueue_sql import SQLStorage

BACKENDS = ["memory", "sqlite", "postgres", "mysql", "redis"]


class BackendHandle:
    """Opens storages of one backend over one isolated location."""

    def __init__(self, name: str, factory: Callable[[], Storage]) -> None:
        self.name = name
        self._factory = factory
        self._opened: list[Storage] = []
        self._first: Storage | None = None

    def open(self) -> Storage:
        storage = self._factory()
        self._opened.append(storage)
        if self._first is None:
            self._first = storage
        return storage

    @property
    def persistent(self) -> bool:
        probe = self._first or self.open()
        return PERSISTENT in probe.capabilities

    def reopen(self) -> Storage:
        """A new storage object over the same data (skips for non-persistent backends)."""
        if not self.persistent:
            pytest.skip(f"{self.name} keeps nothing across reopen")
        return self.open()

    def close_all(self) -> None:
        last = self._opened[-1] if self._opened else None
        for storage in self._opened:
            storage.close()
        if last is not None and hasattr(last, "destroy"):
            cleanup = self._factory()
            cleanup.destroy()  # type: ignore[attr-defined]
            cleanup.close()


def backend_factory(name: str, tmp_path: Path) -> Callable[[], Storage]:
    """A picklable callable that opens storage ``name`` over one isolated location."""
    tag = uuid.uuid4().hex[:8]
    if name == "memory":
        from exqueue_memory import MemoryStorage

        return MemoryStorage
    if name == "sqlite":
        from exqueue_sql import SQLStorage

        return functools.partial(SQLStorage, f"sqlite:///{tmp_path / 'jobs.db'}")
    if name in ("postgres", "mysql"):
        from exqueue_sql import SQLStorage

        return functools.partial(SQLStorage, services.require(name), prefix=f"t{tag}_")
    if name == "redis":
        from exqueue_redis import RedisStorage

        return functools.partial(RedisStorage, services.require("redis"), namespace=f"t{tag}")
    raise ValueError(name)


@contextlib.contextmanager
def opened_sql(name: str, tmp_path: Path) -> Iterator[SQLStorage]:
    """An ``SQLStorage`` of ``name`` (sqlite, postgres, mysql) over a fresh location,
    closed and its tables dropped afterwards."""
    from exqueue_sql import SQLStorage

    handle = BackendHandle(name, backend_factory(name, tmp_path))
    storage = handle.open()
    assert isinstance(storage, SQLStorage)
    try:
        yield storage
    finally:
        handle.close_all()
