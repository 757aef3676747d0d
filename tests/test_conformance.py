"""The conformance suite on every backend we ship: memory, sqlite, postgres, mysql, redis.

This is also the reference use of :class:`conformance.StorageConformance`. Select
one backend with ``-k sqlite``; the thorough profile with
``EXQUEUE_CONFORMANCE_PROFILE=ci``.
"""

from __future__ import annotations

import functools
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance import StorageConformance
from conformance.checks import StorageFactory
from tests import services
from tests.conftest import BACKENDS, backend_factory


def _spawnable(name: str, tmp_path: Path, factory: StorageFactory) -> StorageFactory:
    """``factory`` itself if picklable, else the same storage as a ``functools.partial``.

    The multi-process check hands the factory to spawned processes; conftest's
    factories are lambdas, so the same location is described here picklably.
    """
    try:
        pickle.dumps(factory)
        return factory
    except Exception:
        pass
    tag = uuid.uuid4().hex[:8]
    if name == "sqlite":
        from exqueue_sql import SQLStorage

        return functools.partial(SQLStorage, f"sqlite:///{tmp_path / 'jobs.db'}")
    if name in ("postgres", "mysql"):
        from exqueue_sql import SQLStorage

        return functools.partial(SQLStorage, services.require(name), prefix=f"c{tag}_")
    if name == "redis":
        from exqueue_redis import RedisStorage

        return functools.partial(RedisStorage, services.require("redis"), namespace=f"c{tag}")
    return factory


class TestConformance(StorageConformance):
    @pytest.fixture(params=BACKENDS)
    def make_storage(
        self, request: pytest.FixtureRequest, tmp_path: Path
    ) -> Iterator[StorageFactory]:
        name = request.param
        factory = _spawnable(name, tmp_path, backend_factory(name, tmp_path))
        yield factory
        # Shared servers: drop this test's tables / keys (SQLite lives in tmp_path).
        storage = factory()
        destroy = getattr(storage, "destroy", None)
        if destroy is not None:
            destroy()
        storage.close()
