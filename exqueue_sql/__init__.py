"""exqueue's SQL backend: ``SQLStorage`` on SQLite, PostgreSQL and MariaDB/MySQL.

``exqueue_sql.metadata`` holds the tables for the default prefix, for Alembic.
See docs/sql.md for URLs, the schema, transactional enqueue and wake-ups.
"""

from __future__ import annotations

from exqueue_sql._dialect import StorageTimeoutError
from exqueue_sql._schema import (
    DEFAULT_PREFIX,
    MARIADB_COLLATION,
    MYSQL_COLLATION,
    SCHEMA_VERSION,
    metadata,
    tables,
)
from exqueue_sql._storage import SQLStorage

__all__ = [
    "DEFAULT_PREFIX",
    "MARIADB_COLLATION",
    "MYSQL_COLLATION",
    "SCHEMA_VERSION",
    "SQLStorage",
    "StorageTimeoutError",
    "metadata",
    "tables",
]
