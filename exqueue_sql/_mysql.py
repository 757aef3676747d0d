"""MariaDB and MySQL (PyMySQL): binary collation, GET_LOCK, an autocommit pool.

The portable statements serve as they are: ``SELECT ... FOR UPDATE SKIP
LOCKED`` then ``UPDATE`` for claims, and one ``executemany`` for a batch
enqueue, which PyMySQL sends as one multi-row INSERT.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Select, create_engine, event, text
from sqlalchemy.exc import DBAPIError

from exqueue.storage import SERVER_CLOCK, NewJob
from exqueue_sql._dialect import Dialect, Timeouts
from exqueue_sql._schema import MARIADB_COLLATION, MYSQL_COLLATION, Tables, tables
from exqueue_sql._urls import ping_when_idle

_LOCK_WAIT_TIMEOUT, _DEADLOCK = 1205, 1213
# Room in a packet for the INSERT around the payload: its text and other values.
_STATEMENT_SLACK = 4096


class MySQLDialect(Dialect):
    def __init__(self, engine: Engine, prefix: str, timeouts: Timeouts | None) -> None:
        if timeouts is not None:
            _install_timeouts(engine, timeouts)  # before make_tables connects
        super().__init__(engine, prefix, timeouts)
        # PyMySQL switches autocommit with a round trip, so not per checkout:
        # a small pool of its own, in autocommit from the start.
        self._autocommit = create_engine(
            engine.url, isolation_level="AUTOCOMMIT", pool_reset_on_return=None
        )
        ping_when_idle(self._autocommit)
        if timeouts is not None:
            _install_timeouts(self._autocommit, timeouts)
        self.capabilities |= {SERVER_CLOCK}

    def make_tables(self) -> Tables:
        # The first connection tells MariaDB from MySQL.
        with self.engine.connect() as conn:
            mariadb = getattr(self.engine.dialect, "is_mariadb", False)
            self._packet = int(conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one())
        # Measured on MariaDB 10.11: a value sent in a statement may take at most
        # half of max_allowed_packet (its escaped form, up to twice as long, then
        # fits the packet too); beyond that the server drops the connection.
        self._largest = self._packet // 2 - _STATEMENT_SLACK
        collate = MARIADB_COLLATION if mariadb else MYSQL_COLLATION
        return tables(self.prefix, mysql_collate=collate)

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

    def insert(self, conn: Connection, jobs: Sequence[NewJob]) -> None:
        for job in jobs:
            if len(job.payload) > self._largest:
                # Refused before anything is sent: the server would drop the
                # connection ("server has gone away") instead.
                raise ValueError(
                    f"job {job.id!r} of {job.worker!r}: its arguments take "
                    f"{len(job.payload):,} bytes, more than the {self._largest:,} this server "
                    f"takes in one value (half its max_allowed_packet of {self._packet:,} "
                    "bytes); nothing was stored. Pass smaller arguments (a reference to the "
                    "data rather than the data) or raise max_allowed_packet"
                )
        super().insert(conn, jobs)

    def add_unique_rows(self, conn: Connection, keys: Sequence[tuple[str, str]]) -> None:
        u = self.tables.unique
        rows = [{"worker": w, "unique_key": k} for w, k in keys]
        conn.execute(u.insert().values(rows).prefix_with("IGNORE"))

    def claim_index(self, pick: Select[Any]) -> Select[Any]:
        # Without it MariaDB may take (state, expires_at) for "expires_at IS NULL"
        # and sort every waiting job of the worker type (seen with a few thousand).
        name = self.engine.dialect.identifier_preparer.quote(f"{self.prefix}jobs_claim")
        hint = f"FORCE INDEX ({name})"
        return pick.with_hint(self.jobs, hint, "mysql").with_hint(self.jobs, hint, "mariadb")

    def single_engine(self, relaxed: bool) -> Engine:
        return self._autocommit

    def transient(self, exc: DBAPIError) -> bool:
        args: tuple[Any, ...] = getattr(exc.orig, "args", ())
        return bool(args) and args[0] in (_LOCK_WAIT_TIMEOUT, _DEADLOCK)

    @staticmethod
    def timed_out(exc: DBAPIError) -> bool:
        return "timed out" in str(exc.orig)

    def server_time(self, conn: Connection) -> float:
        # SYSDATE(6), not NOW(6): NOW() is the statement's start, fixed in a transaction.
        return float(conn.exec_driver_sql("SELECT UNIX_TIMESTAMP(SYSDATE(6))").scalar_one())

    def close(self) -> None:
        self._autocommit.dispose()


def _install_timeouts(engine: Engine, timeouts: Timeouts) -> None:
    """PyMySQL connections with a connect timeout and a read/write (statement) timeout.

    PyMySQL reads the login handshake with its read timeout, so a server that
    accepts and never answers would hold a connect for the statement timeout (or
    forever, PyMySQL's default): the handshake is read with the connect timeout
    and the statement timeout set once logged in. A ``connect_timeout`` or
    ``read_timeout`` in the URL wins over these.
    """

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        if timeouts.connect is not None:
            cparams.setdefault("connect_timeout", timeouts.connect)
        statement = cparams.get("read_timeout", timeouts.statement)
        if statement is not None:
            cparams.setdefault("write_timeout", statement)
        cparams["read_timeout"] = cparams.get("connect_timeout") or statement
        conn = dialect.loaded_dbapi.connect(*cargs, **cparams)
        # No public setter: PyMySQL keeps it here and applies it on every read.
        conn._read_timeout = statement
        return conn
