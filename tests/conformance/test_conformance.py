"""The conformance suite on every backend we ship: memory, sqlite, postgres, mysql, redis.

This is also the reference use of :class:`conformance.StorageConformance`. Select
one backend with ``-k sqlite``; the thorough profile with
``EXQUEUE_CONFORMANCE_PROFILE=ci``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance import StorageConformance
from conformance.checks import StorageFactory
from tests.support.backends import BACKENDS, backend_factory


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
