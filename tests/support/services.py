"""Where the real services for backend tests are, and what to do when one is missing.

Each URL comes from an environment variable with a loopback default. Without the
server, that backend's tests skip with a reason that says how to enable them;
with ``EXQUEUE_REQUIRE_SERVICES=1`` (as ``.ci/run`` sets) a missing service fails.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

POSTGRES_URL = os.environ.get(
    "EXQUEUE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("EXQUEUE_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("EXQUEUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

REQUIRED = os.environ.get("EXQUEUE_REQUIRE_SERVICES") == "1"

_HINTS = {
    "postgres": "start PostgreSQL on 127.0.0.1:5432 or set EXQUEUE_TEST_POSTGRES_URL",
    "mysql": "start MariaDB/MySQL on 127.0.0.1:3306 or set EXQUEUE_TEST_MYSQL_URL",
    "redis": "start Redis on 127.0.0.1:6379 or set EXQUEUE_TEST_REDIS_URL",
}
_reachable: dict[str, bool] = {}


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require(name: str) -> str:
    """The URL of service ``name``; skip (or fail under CI) when it does not answer."""
    url, port = {
        "postgres": (POSTGRES_URL, 5432),
        "mysql": (MYSQL_URL, 3306),
        "redis": (REDIS_URL, 6379),
    }[name]
    if name not in _reachable:
        _reachable[name] = _answers(url, port)
    if not _reachable[name]:
        message = f"{name} is not reachable at {url}: {_HINTS[name]}"
        if REQUIRED:
            pytest.fail(message + " (EXQUEUE_REQUIRE_SERVICES=1: a missing service is a failure)")
        pytest.skip(message)
    return url
