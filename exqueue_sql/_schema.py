"""The SQL schema: a jobs table, a meta table holding the schema version, and
a table of unique keys (lock rows and completion markers).

``tables(prefix)`` builds the tables for one prefix on a fresh ``MetaData``;
``exqueue_sql.metadata`` is the default prefix's, for Alembic users.
:func:`upgrade` brings the tables of an earlier schema version up to this one.
"""

from __future__ import annotations

import logging
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
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.schema import CreateColumn

from exqueue.errors import ConfigurationError, SchemaVersionError
from exqueue_sql._control import control_table
from exqueue_sql._limits import limit_tables
from exqueue_sql._observe import observe_tables
from exqueue_sql._schedules import schedules_table

#: Bump when the tables change. A store of an earlier version is upgraded in
#: place (:func:`upgrade`); one of a later version is refused.
SCHEMA_VERSION = 2
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
    #: One row per (worker, unique key) in use: enqueues and completions lock
    #: it, so a key's check and insert are one step across processes.
    unique: Table
    #: Completion markers: a completed job with a unique period holds its key
    #: until ``hold_until`` (completed at + its period) after its row is gone.
    done: Table


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
        # -- schema version 2 (each nullable or with a server default, so a
        # version-1 table takes them in place and version-1 writers keep working)
        Column("priority", Integer, nullable=False, server_default="0"),
        # A JSON object of str -> str, written sorted and ASCII-only (see _records).
        Column("meta", Text, nullable=False, server_default="{}"),
        Column("timeout", Double),
        Column("expires_at", Double),
        Column("unique_key", String(255)),
        # The Unique.period the job was enqueued with: how long its completion holds the key.
        Column("unique_period", Double),
        # The job's limit key (JobRecord.partition); added in place to earlier tables.
        Column("partition_key", String(255)),
        # Claims: an index scan on (worker, 'waiting') already in (priority,
        # run_at, seq) order, so LIMIT n reads about n index entries however many
        # rows wait (jobs scheduled for later are passed over, per priority).
        Index(f"{prefix}jobs_claim", "worker", "state", "priority", "run_at", "seq"),
        # Unique enqueue: the jobs of a worker holding a key. expire(): waiting
        # jobs with expires_at <= now, a range scan. Partial where the database
        # has it, so a job without a key or an expiry costs neither index.
        Index(
            f"{prefix}jobs_unique",
            "worker",
            "unique_key",
            postgresql_where=text("unique_key IS NOT NULL"),
            sqlite_where=text("unique_key IS NOT NULL"),
        ),
        Index(
            f"{prefix}jobs_expiry",
            "state",
            "expires_at",
            postgresql_where=text("expires_at IS NOT NULL"),
            sqlite_where=text("expires_at IS NOT NULL"),
        ),
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
    unique = Table(
        f"{prefix}unique",
        md,
        Column("worker", String(255), primary_key=True),
        Column("unique_key", String(255), primary_key=True),
        **options,
    )
    done = Table(
        f"{prefix}unique_done",
        md,
        Column("worker", String(255), primary_key=True),
        Column("unique_key", String(255), primary_key=True),
        # The completed job's seq (the oldest holder is named first) and id.
        Column("seq", BigInteger, primary_key=True, autoincrement=False),
        Column("job_id", String(255), nullable=False),
        Column("hold_until", Double, nullable=False),
        Index(f"{prefix}unique_done_until", "hold_until"),
        **options,
    )
    schedules_table(prefix, md, options)  # {prefix}schedules: see _schedules
    observe_tables(prefix, md, options)  # {prefix}nodes, {prefix}history: see _observe
    control_table(prefix, md, options)  # {prefix}job_control: see _control
    limit_tables(prefix, md, options)  # {prefix}worker_control, {prefix}starts: see _limits
    return Tables(jobs, meta, unique, done)


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


def upgrade(conn: Connection, found: Tables) -> None:
    """Bring tables of an earlier schema version up to :data:`SCHEMA_VERSION`.

    Called under the schema lock. Each step checks what is there first, so an
    upgrade cut short (MariaDB commits each DDL statement on its own) finishes
    on the next start; the caller writes the new version last.
    """
    have = inspect(conn)
    jobs = found.jobs
    present = {c["name"] for c in have.get_columns(jobs.name)}
    add_missing(conn, jobs, present)
    indexes = {ix["name"]: tuple(ix["column_names"]) for ix in have.get_indexes(jobs.name)}
    for index in jobs.indexes:
        wanted = tuple(c.name for c in index.columns)
        if index.name in indexes and indexes[index.name] != wanted:
            # Version 1's claim index had no priority: replaced under the same name.
            index_name = conn.dialect.identifier_preparer.quote(str(index.name))
            table_name = conn.dialect.identifier_preparer.format_table(jobs)
            if conn.dialect.name in ("mysql", "mariadb"):
                conn.exec_driver_sql(f"DROP INDEX {index_name} ON {table_name}")
            else:
                conn.exec_driver_sql(f"DROP INDEX {index_name}")
            del indexes[str(index.name)]
        if index.name not in indexes:
            index.create(conn)
    for table in (found.unique, found.done):
        if not have.has_table(table.name):
            table.create(conn)


_VERSION_KEY = "schema_version"

log = logging.getLogger("exqueue")


def open_tables(conn: Connection, found: Tables, prefix: str, create: bool) -> int | None:
    """Create the tables if asked, check the stored schema version, upgrade an earlier one.

    Called in the schema lock's transaction. Returns the version upgraded from,
    or None when nothing was upgraded.
    """
    jobs, meta = found.jobs, found.meta
    have = inspect(conn)
    has_jobs, has_meta = have.has_table(jobs.name), have.has_table(meta.name)
    if has_jobs and not has_meta:
        raise SchemaVersionError(
            f"table {jobs.name!r} exists without {meta.name!r}: it was not "
            "created by this version of exqueue; use another prefix or migrate it"
        )
    if not (has_jobs and has_meta):
        if not create:
            raise ConfigurationError(
                f"the exqueue tables {jobs.name!r}/{meta.name!r} do not exist "
                "(nothing was created): check the URL and the prefix, or create them "
                "(create=True, or from exqueue_sql.metadata with Alembic)"
            )
        jobs.metadata.create_all(conn)
    stored = conn.scalar(select(meta.c.value).where(meta.c.key == _VERSION_KEY))
    if stored is None:
        # Fresh tables (ours, or made by Alembic from exqueue_sql.metadata).
        upgrade(conn, found)  # tables made from an older metadata lack the newer parts
        conn.execute(insert(meta).values(key=_VERSION_KEY, value=str(SCHEMA_VERSION)))
        return None
    version = int(stored) if stored.isdigit() else None
    if version is None or version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the exqueue tables with prefix {prefix!r} have schema version "
            f"{stored}, but this exqueue knows schema versions up to {SCHEMA_VERSION}: "
            "a newer exqueue wrote them. Upgrade exqueue on this machine to the "
            "version the other processes run (pip install -U exqueue), or use a "
            "different prefix"
        )
    # An earlier version (or columns added since within this one): brought up to
    # date in place, under the lock, every row kept; the version is written last,
    # so the next process to take the lock finds it current and does nothing.
    upgrade(conn, found)
    if version == SCHEMA_VERSION:
        return None
    conn.execute(update(meta).where(meta.c.key == _VERSION_KEY).values(value=str(SCHEMA_VERSION)))
    log.warning(
        "exqueue: upgraded the tables with prefix %r from schema version %d to %d",
        prefix, version, SCHEMA_VERSION,
    )  # fmt: skip
    return version


#: The default prefix's tables, for ``alembic`` autogenerate (``target_metadata``).
metadata = MetaData()
tables(DEFAULT_PREFIX, metadata)
