"""The conformance suite on every backend we ship: memory, sqlite, postgres, mysql, redis
(Redis Cluster: ``test_conformance_redis_cluster.py``).

This is also the reference use of :class:`conformance.StorageConformance`. Select
one backend with ``-k sqlite``; the thorough profile with
``EXQUEUE_CONFORMANCE_PROFILE=ci``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conformance import StorageConformance
from conformance.checks import StorageFactory
from tests.support.backends import BACKENDS, backend_factory


@pytest.fixture(scope="class", params=BACKENDS)
def location(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StorageFactory]:
    # One location per backend for the whole class: every check empties it first,
    # and creating and dropping a schema per test cost a third of the suite's time
    # on MariaDB.
    name = request.param
    factory = backend_factory(name, tmp_path_factory.mktemp(name))
    yield factory
    # Shared servers: drop the tables / keys (SQLite lives in a temporary directory).
    storage = factory()
    destroy = getattr(storage, "destroy", None)
    if destroy is not None:
        destroy()
    storage.close()


class TestConformance(StorageConformance):
    @pytest.fixture
    def make_storage(self, location: StorageFactory) -> StorageFactory:
        return location
