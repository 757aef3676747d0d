"""The conformance suite on every backend we ship: memory, sqlite, postgres, mysql, redis,
and Redis Cluster.

This is also the reference use of :class:`conformance.StorageConformance`. Select
one backend with ``-k sqlite``; the thorough profile with
``EXQUEUE_CONFORMANCE_PROFILE=ci``.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance import StorageConformance
from conformance.checks import StorageFactory
from tests.support.backends import BACKENDS, backend_factory
from tests.test_redis_servers import RedisClusterProcesses, cluster_processes


class TestConformance(StorageConformance):
    @pytest.fixture(params=BACKENDS)
    def make_storage(
        self, request: pytest.FixtureRequest, tmp_path: Path
    ) -> Iterator[StorageFactory]:
        name = request.param
        factory = backend_factory(name, tmp_path)
        yield factory
        # Shared servers: drop this test's tables / keys (SQLite lives in tmp_path).
        storage = factory()
        destroy = getattr(storage, "destroy", None)
        if destroy is not None:
            destroy()
        storage.close()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    yield from cluster_processes(tmp_path_factory.mktemp("cluster"))


@pytest.mark.slow
class TestConformanceRedisCluster(StorageConformance):
    """The same suite on a three-master Redis Cluster started for this module."""

    @pytest.fixture
    def make_storage(self, redis_cluster: RedisClusterProcesses) -> Iterator[StorageFactory]:
        from exqueue_redis import RedisStorage

        namespace = f"t{uuid.uuid4().hex[:8]}"
        factory = functools.partial(RedisStorage, redis_cluster.url, namespace=namespace)
        yield factory
        storage = factory()
        storage.destroy()
        storage.close()
