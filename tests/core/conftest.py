"""Fixtures of the core tests: a fake clock, and a queue on every protocol-2 backend.

``queue`` is the default of this folder (a module may define its own, as
test_lifecycle.py and test_guards.py do): a :class:`exqueue.Queue` on the fake
``clock`` over ``v2_backend``, which runs the test on each backend that declares
protocol 2 (and skips one that does not yet).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import exqueue
from exqueue.storage import PROTOCOL_2
from tests.support.backends import BackendHandle, backend_factory
from tests.support.clock import FakeClock

V2_BACKENDS = ["memory", "sqlite", "postgres", "mysql", "redis"]


@pytest.fixture(params=V2_BACKENDS)
def v2_backend(request: Any, tmp_path: Path) -> Iterator[BackendHandle]:
    handle = BackendHandle(request.param, backend_factory(request.param, tmp_path))
    storage = handle.open()
    if not PROTOCOL_2 <= storage.capabilities:
        handle.close_all()
        pytest.skip(f"the {request.param} backend does not declare protocol 2 yet")
    yield handle
    handle.close_all()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(v2_backend: BackendHandle, clock: FakeClock) -> exqueue.Queue:
    return exqueue.Queue(v2_backend.open(), clock=clock, poll_interval=0.05)
