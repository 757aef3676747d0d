"""Fixtures of the dashboard tests: a filled store per backend and a client over it."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the dashboard extra is not installed")

import exqueue  # noqa: E402
from tests.dashboard.helpers import Filled, fill  # noqa: E402
from tests.support.backends import BackendHandle, backend_factory  # noqa: E402

DASH_BACKENDS = ["sqlite", "postgres", "mysql", "redis"]


@pytest.fixture(params=DASH_BACKENDS)
def filled(request: Any, tmp_path: Path) -> Iterator[Filled]:
    handle = BackendHandle(request.param, backend_factory(request.param, tmp_path))
    queue = exqueue.Queue(handle.open())
    try:
        yield fill(queue)
    finally:
        handle.close_all()


def client_for(app: Any) -> Any:
    with warnings.catch_warnings():
        # Starlette 1.x suggests another HTTP client for its TestClient; httpx works.
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

        return TestClient(app, base_url="http://127.0.0.1:8080")
