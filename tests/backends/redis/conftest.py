"""Fixtures of the Redis tests: each runs on the shared server and on a local cluster.

``backend`` overrides the suite-wide one (every backend) with the two Redis
deployments: the shared server (``redis``, as tests/conftest.py opens it) and a
three-master Redis Cluster that the ``redis_cluster`` fixture starts from the
redis-server binary (``redis-cluster``). ``url`` is the URL of either, for
tests that open their own storages (or run other processes).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from exqueue.storage import Storage
from exqueue_redis import RedisStorage
from tests.support import services
from tests.support.backends import BackendHandle, backend_factory
from tests.support.redis_servers import RedisClusterProcesses


@pytest.fixture(params=["redis", "redis-cluster"])
def backend(request: Any, tmp_path: Path) -> Iterator[BackendHandle]:
    factory: Callable[[], Storage]
    if request.param == "redis":
        factory = backend_factory("redis", tmp_path)
    else:
        cluster: RedisClusterProcesses = request.getfixturevalue("redis_cluster")
        namespace = f"t{uuid.uuid4().hex[:8]}"
        factory = lambda: RedisStorage(cluster.url, namespace=namespace)  # noqa: E731
    handle = BackendHandle(request.param, factory)
    yield handle
    handle.close_all()


@pytest.fixture(params=["redis", "redis-cluster"])
def url(request: Any) -> str:
    if request.param == "redis":
        return services.require("redis")
    cluster: RedisClusterProcesses = request.getfixturevalue("redis_cluster")
    return cluster.url
