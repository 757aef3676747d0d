"""Where the real services are: one URL per server, from the environment, with loopback defaults.

The fault harness (``benchmarks/faults_harness.py``) and the tests share these;
``tests/support/services.py`` adds the pytest side (skip, or fail under
``EXQUEUE_REQUIRE_SERVICES=1``). Nothing here imports pytest or the tests.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

POSTGRES_URL = os.environ.get(
    "EXQUEUE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("EXQUEUE_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("EXQUEUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

#: Service name -> (URL, the port when the URL names none).
SERVERS = {
    "postgres": (POSTGRES_URL, 5432),
    "mysql": (MYSQL_URL, 3306),
    "redis": (REDIS_URL, 6379),
}


def answers(name: str) -> bool:
    """Whether service ``name``'s server accepts a TCP connection now."""
    url, default_port = SERVERS[name]
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False
