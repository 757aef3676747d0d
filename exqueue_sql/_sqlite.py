"""SQLite: WAL, BEGIN IMMEDIATE, a busy timeout, and enqueue straight on the driver.

One writer at a time: every write transaction takes the write lock at BEGIN,
so a claim is a serial read-then-update and no two processes take one job.
A private ``:memory:`` database is one connection shared by every thread, so
its calls are serialized here.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import DBAPIError

from exqueue.storage import MULTI_PROCESS, PERSISTENT, NewJob
from exqueue_sql._dialect import Dialect, insert_rows
from exqueue_sql._runner import Attempt, Runner
from exqueue_sql._urls import is_memory

_BUSY_TIMEOUT_MS = 30_000


class SQLiteDialect(Dialect):
    def __init__(self, engine: Engine, prefix: str) -> None:
        super().__init__(engine, prefix)
        if is_memory(engine.url):
            self.lock = threading.Lock()
            self.capabilities -= {PERSISTENT, MULTI_PROCESS}
        _install_hooks(engine)

    def transient(self, exc: DBAPIError) -> bool:
        return "database is locked" in str(exc.orig)

    def enqueue(self, runner: Runner, jobs: Sequence[NewJob]) -> None:
        """``executemany`` in one write transaction on the driver itself.

        Next to SQLite's one WAL flush, SQLAlchemy's execution machinery costs a
        fifth of an enqueue, so the hot path goes around it; errors are wrapped
        as SQLAlchemy's, so the runner retries a busy database as it does elsewhere.
        """
        sql, rows = self.insert_sql, insert_rows(jobs)

        def once(attempt: Attempt) -> None:
            with self.lock:
                pooled = self.engine.raw_connection()
                try:
                    db = pooled.driver_connection
                    assert db is not None
                    try:
                        db.execute("BEGIN IMMEDIATE")
                        try:
                            db.executemany(sql, rows)
                            db.execute("COMMIT")
                        except BaseException:
                            if db.in_transaction:
                                db.execute("ROLLBACK")
                            raise
                    except sqlite3.Error as exc:
                        raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc
                finally:
                    pooled.close()

        runner.retrying(once)


def _install_hooks(engine: Engine) -> None:
    """WAL, a busy timeout, and BEGIN IMMEDIATE for every write transaction.

    pysqlite would otherwise BEGIN lazily (deferred): two processes could both
    read the same waiting job before either upgrades to the write lock. Taking
    the write lock at BEGIN makes each claim a serial read-then-update.
    """
    if getattr(engine, "_exqueue_hooks", False):
        return

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # FULL: a job is on disk when enqueue returns, even across power loss.
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        read = conn.get_execution_options().get("exqueue_read", False)
        # Straight to the driver: an exec_driver_sql here costs as much as the insert.
        conn.connection.driver_connection.execute("BEGIN" if read else "BEGIN IMMEDIATE")  # type: ignore[union-attr]

    engine._exqueue_hooks = True  # type: ignore[attr-defined]
