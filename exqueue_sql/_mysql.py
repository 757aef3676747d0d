"""MariaDB and MySQL (PyMySQL): binary collation, GET_LOCK, an autocommit pool.

The portable statements serve as they are: ``SELECT ... FOR UPDATE SKIP
LOCKED`` then ``UPDATE`` for claims, and one ``executemany`` for a batch
enqueue, which PyMySQL sends as one multi-row INSERT.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from exqueue_sql._dialect import Dialect
from exqueue_sql._schema import MARIADB_COLLATION, MYSQL_COLLATION, Tables, tables
from exqueue_sql._urls import ping_when_idle

_LOCK_WAIT_TIMEOUT, _DEADLOCK = 1205, 1213


class MySQLDialect(Dialect):
    def __init__(self, engine: Engine, prefix: str) -> None:
        super().__init__(engine, prefix)
        # PyMySQL switches autocommit with a round trip, so not per checkout:
        # a small pool of its own, in autocommit from the start.
        self._autocommit = create_engine(
            engine.url, isolation_level="AUTOCOMMIT", pool_reset_on_return=None
        )
        ping_when_idle(self._autocommit)

    def make_tables(self) -> Tables:
        with self.engine.connect():  # the first connection tells MariaDB from MySQL
            mariadb = getattr(self.engine.dialect, "is_mariadb", False)
        return tables(self.prefix, mysql_collate=MARIADB_COLLATION if mariadb else MYSQL_COLLATION)

    @contextlib.contextmanager
    def schema_lock(self, conn: Connection) -> Iterator[None]:
        # DDL commits implicitly on MariaDB, so a session lock spans it.
        name = f"exqueue:{self.prefix}"
        conn.execute(text("SELECT GET_LOCK(:n, 60)"), {"n": name})
        conn.commit()
        try:
            with conn.begin():
                yield
        finally:
            conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": name})
            conn.commit()

    def single_engine(self, relaxed: bool) -> Engine:
        return self._autocommit

    def transient(self, exc: DBAPIError) -> bool:
        args: tuple[Any, ...] = getattr(exc.orig, "args", ())
        return bool(args) and args[0] in (_LOCK_WAIT_TIMEOUT, _DEADLOCK)

    def close(self) -> None:
        self._autocommit.dispose()
