"""Shared fixtures: one ``backend`` fixture runs a test on every storage backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exqueue.storage import Storage
from tests.support.backends import BACKENDS, BackendHandle, backend_factory


@pytest.fixture(params=BACKENDS)
def backend(request: Any, tmp_path: Path) -> Iterator[BackendHandle]:
    handle = BackendHandle(request.param, backend_factory(request.param, tmp_path))
    yield handle
    handle.close_all()


@pytest.fixture
def storage(backend: BackendHandle) -> Storage:
    return backend.open()
