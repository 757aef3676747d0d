"""The SQL schema: a jobs table and a meta table holding the schema version.

``tables(prefix)`` builds both tables for one prefix on a fresh ``MetaData``;
``exqueue_sql.metadata`` is the default prefix's, for Alembic users.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.schema import CreateColumn

from exqueue_sql._schedules import schedules_table

#: Bump when the tables change; a store written by another version is refused.
SCHEMA_VERSION = 1
DEFAULT_PREFIX = "exqueue_"

# MariaDB's BLOB stops at 64 KiB; LONGBLOB holds any payload the other dialects hold.
_PAYLOAD = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
_TEXT = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
_SEQ = BigInteger().with_variant(Integer(), "sqlite")
# A binary NO PAD collation on MariaDB/MySQL: ids and worker names compare
# exactly, as on every other backend. The server default is case-insensitive,
# and utf8mb4_bin is PAD SPACE ("cafe" = "cafe "). MySQL 8 spells it utf8mb4_0900_bin.
MARIADB_COLLATION = "utf8mb4_nopad_bin"
MYSQL_COLLATION = "utf8mb4_0900_bin"


class Tables(NamedTuple):
    jobs: Table
    meta: Table


def tables(
    prefix: str = DEFAULT_PREFIX,
    metadata: MetaData | None = None,
    *,
    mysql_collate: str = MARIADB_COLLATION,
) -> Tables:
    """The jobs and meta tables for ``prefix``, added to ``metadata`` (or a new one).

    On MySQL 8 (not MariaDB) pass ``mysql_collate=MYSQL_COLLATION``.
    """
    md = metadata if metadata is not None else MetaData()
    options: dict[str, Any] = {
        "mysql_engine": "InnoDB",
        "mysql_charset": "utf8mb4",
        "mysql_collate": mysql_collate,
    }
    jobs = Table(
        f"{prefix}jobs",
        md,
        Column("seq", _SEQ, primary_key=True, autoincrement=True),
        Column("id", String(255), nullable=False, unique=True),
        Column("worker", String(255), nullable=False),
        Column("payload", _PAYLOAD, nullable=False),
        Column("state", String(16), nullable=False),
        Column("attempt", Integer, nullable=False),
        Column("max_attempts", Integer, nullable=False),
        Column("run_at", Double, nullable=False),
        Column("enqueued_at", Double, nullable=False),
        # The first and the last ERRORS_KEPT errors, a JSON list; error_count
        # counts every error ever recorded. Added after schema version 1 shipped:
        # SQLStorage adds it in place to tables made without it (add_missing).
        Column("errors", _TEXT, nullable=False),
        Column("error_count", Integer, nullable=False, server_default="0"),
        Column("lease_owner", String(255)),
        Column("lease_token", String(255)),
        Column("lease_expires", Double),
        # Claims: a range scan on (worker, 'waiting', run_at <= now) already in
        # (run_at, seq) order, so LIMIT n reads n index entries however many rows wait.
        Index(f"{prefix}jobs_claim", "worker", "state", "run_at", "seq"),
        # Serial head: the lowest seq of a worker in any state.
        Index(f"{prefix}jobs_head", "worker", "seq"),
        # Recovery (state = 'running': few rows, bounded by total concurrency) and
        # list_jobs(state=...) ordered by seq.
        Index(f"{prefix}jobs_state", "state", "seq"),
        # AUTOINCREMENT: SQLite would otherwise reuse the seq of a deleted last row.
        sqlite_autoincrement=True,
        **options,
    )
    meta = Table(
        f"{prefix}meta",
        md,
        Column("key", String(64), primary_key=True),
        Column("value", String(255), nullable=False),
        **options,
    )
    schedules_table(prefix, md, options)  # {prefix}schedules: see _schedules
    return Tables(jobs, meta)


def add_missing(conn: Connection, jobs: Table, present: set[str]) -> None:
    """Add the columns of ``jobs`` that a store made by an earlier version lacks.

    Only columns with a server default are ever added after a release, so rows
    already stored (and writers still running the earlier version, which name
    their columns) go on working; no row is rewritten.
    """
    name = conn.dialect.identifier_preparer.format_table(jobs)
    for column in jobs.columns:
        if column.name not in present:
            spec = CreateColumn(column).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {spec}")


#: The default prefix's tables, for ``alembic`` autogenerate (``target_metadata``).
metadata = MetaData()
tables(DEFAULT_PREFIX, metadata)
