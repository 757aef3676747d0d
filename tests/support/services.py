"""What to do when a service a backend test needs is missing.

The URLs come from ``benchmarks/services.py`` (shared with the fault harness).
Without the server, that backend's tests skip with a reason that says how to
enable them; with ``EXQUEUE_REQUIRE_SERVICES=1`` (as ``.ci/run`` sets) a missing
service fails.
"""

from __future__ import annotations

import os

import pytest

from benchmarks.services import MYSQL_URL, POSTGRES_URL, REDIS_URL, SERVERS, answers

__all__ = ["MYSQL_URL", "POSTGRES_URL", "REDIS_URL", "REQUIRED", "require"]

REQUIRED = os.environ.get("EXQUEUE_REQUIRE_SERVICES") == "1"

_HINTS = {
    "postgres": "start PostgreSQL on 127.0.0.1:5432 or set EXQUEUE_TEST_POSTGRES_URL",
    "mysql": "start MariaDB/MySQL on 127.0.0.1:3306 or set EXQUEUE_TEST_MYSQL_URL",
    "redis": "start Redis on 127.0.0.1:6379 or set EXQUEUE_TEST_REDIS_URL",
}
_reachable: dict[str, bool] = {}


def require(name: str) -> str:
    """The URL of service ``name``; skip (or fail under CI) when it does not answer."""
    url = SERVERS[name][0]
    if name not in _reachable:
        _reachable[name] = answers(name)
    if not _reachable[name]:
        message = f"{name} is not reachable at {url}: {_HINTS[name]}"
        if REQUIRED:
            pytest.fail(message + " (EXQUEUE_REQUIRE_SERVICES=1: a missing service is a failure)")
        pytest.skip(message)
    return url
