"""The conformance suite on RedisStorage over a three-master Redis Cluster.

``test_conformance.py`` runs it on the shared single Redis server; a cluster
routes every key of a namespace to one slot through its hash tag, which only a
run against a real cluster proves. The cluster is started from the
``redis-server`` binary (skips without it, fails under ``EXQUEUE_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator

import pytest

from conformance import StorageConformance
from conformance.checks import StorageFactory
from exqueue_redis import RedisStorage
from tests.support.redis_servers import RedisClusterProcesses


class TestConformanceRedisCluster(StorageConformance):
    @pytest.fixture
    def make_storage(self, redis_cluster: RedisClusterProcesses) -> Iterator[StorageFactory]:
        # A partial, not a lambda: the process-race check pickles the factory.
        factory = functools.partial(
            RedisStorage, redis_cluster.url, namespace=f"t{uuid.uuid4().hex[:8]}"
        )
        yield factory
        storage = factory()
        storage.destroy()
        storage.close()
