"""SQLite: WAL, BEGIN IMMEDIATE, a busy timeout, and enqueue straight on the driver.

One writer at a time: every write transaction takes the write lock at BEGIN,
so a claim is a serial read-then-update and no two processes take one job.
A private ``:memory:`` database is one connection shared by every thread, so
its calls are serialized here.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError

from exqueue.storage import MULTI_PROCESS, PERSISTENT, NewJob
from exqueue_sql._dialect import Dialect, Timeouts
from exqueue_sql._runner import Attempt, Runner
from exqueue_sql._urls import is_memory

_BUSY_TIMEOUT_MS = 30_000
_FULL_PAUSE = 5.0  # seconds between two checkpoints after disk-full errors
_CHECKPOINT_WAIT = 0.5  # seconds that checkpoint waits for readers and writers

log = logging.getLogger("exqueue")


class SQLiteDialect(Dialect):
    serializes_writes = True

    def __init__(self, engine: Engine, prefix: str, timeouts: Timeouts | None) -> None:
        super().__init__(engine, prefix, timeouts)
        self._last_full = -_FULL_PAUSE
        if is_memory(engine.url):
            self.lock = threading.Lock()
            self.capabilities -= {PERSISTENT, MULTI_PROCESS}
        _install_hooks(engine)

    def unusable(self, create: bool) -> str | None:
        """A missing file (when not creating), a missing directory or a read-only file.

        SQLite would create the file (and so an empty store at a mistyped path),
        or fail with a bare "unable to open database file".
        """
        url = self.engine.url
        if is_memory(url) or url.query.get("uri") or not url.database:
            return None
        path = os.path.abspath(url.database)
        folder = os.path.dirname(path)
        if not os.path.exists(path):
            if not create:
                return (
                    f"the exqueue tables do not exist: there is no SQLite file {path!r} "
                    "(nothing was created); check the path"
                )
            if not os.path.isdir(folder):
                return f"cannot create the SQLite file {path!r}: {folder!r} is not a directory"
            writable = os.access(folder, os.W_OK | os.X_OK)
        else:
            # Writes go to the file and to its -wal and -shm files beside it,
            # which SQLite creates in the folder unless they exist already.
            companions = [f"{path}-wal", f"{path}-shm"]
            writable = os.access(path, os.W_OK) and (
                os.access(folder, os.W_OK | os.X_OK)
                or all(os.access(c, os.W_OK) for c in companions)
            )
        if not writable:
            return (
                f"the SQLite store {path!r} is read-only for this process: exqueue writes "
                f"to the file and creates its -wal and -shm files in {folder!r}, so both "
                "must be writable"
            )
        return None

    def failed(self, exc: DBAPIError) -> None:
        """On a full disk, give the WAL's space back to the file system, and say so.

        The WAL file keeps its largest size; after a disk-full error the space
        that deleted jobs free inside the database is not the disk space the
        next write needs. A TRUNCATE checkpoint moves the WAL into the database
        and shrinks the file to nothing. The failed call changed nothing; the
        caller (the worker's dispatcher) backs off and tries again.
        """
        if getattr(exc.orig, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
            return
        if is_memory(self.engine.url):
            return
        now = time.monotonic()
        if now - self._last_full < _FULL_PAUSE:
            return
        self._last_full = now
        path = self.engine.url.database or ""
        wal = f"{path}-wal"
        before = _size(wal)
        try:
            # Its own connection, waiting briefly: readers or a writer in the
            # way only mean the next disk-full error tries again.
            db = sqlite3.connect(path, timeout=_CHECKPOINT_WAIT)
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                db.close()
        except sqlite3.Error as checkpoint_error:
            log.warning(
                "SQLite store %s: the disk is full (%s); a WAL checkpoint to free space "
                "failed too (%s); the failed call changed nothing: free disk space",
                path, exc.orig, checkpoint_error,
            )  # fmt: skip
            return
        log.warning(
            "SQLite store %s: the disk is full (%s); checkpointed the WAL, which gave back "
            "%d bytes; the failed call changed nothing: free disk space",
            path, exc.orig, before - _size(wal),
        )  # fmt: skip

    def transient(self, exc: DBAPIError) -> bool:
        return "database is locked" in str(exc.orig)

    def add_unique_rows(self, conn: Connection, keys: Sequence[tuple[str, str]]) -> None:
        u = self.tables.unique
        rows = [{"worker": w, "unique_key": k} for w, k in keys]
        conn.execute(sqlite_insert(u).values(rows).on_conflict_do_nothing())

    def enqueue(self, runner: Runner, jobs: Sequence[NewJob]) -> None:
        """``executemany`` in one write transaction on the driver itself.

        Next to SQLite's one WAL flush, SQLAlchemy's execution machinery costs a
        fifth of an enqueue, so the hot path goes around it; errors are wrapped
        as SQLAlchemy's, so the runner retries a busy database as it does elsewhere.
        """
        sql, rows = self.insert_statement(jobs)

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


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


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
