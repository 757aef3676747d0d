"""Shared fixtures: ``backend`` runs a test on every storage backend; ``redis_cluster``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exqueue.storage import Storage
from tests.support.backends import BACKENDS, BackendHandle, backend_factory
from tests.support.redis_servers import RedisClusterProcesses, cluster_processes


@pytest.fixture(params=BACKENDS)
def backend(request: Any, tmp_path: Path) -> Iterator[BackendHandle]:
    handle = BackendHandle(request.param, backend_factory(request.param, tmp_path))
    yield handle
    handle.close_all()


@pytest.fixture
def storage(backend: BackendHandle) -> Storage:
    return backend.open()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    """One throwaway three-master Redis Cluster for the whole run (tests use own namespaces)."""
    yield from cluster_processes(tmp_path_factory.mktemp("cluster"))
