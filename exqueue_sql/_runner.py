"""The SQL backend's one transaction runner and its one retry loop.

Every protocol call is one short transaction (or one autocommit statement).
Deadlocks, serialization failures, a busy database and a connection that broke
before COMMIT was sent are run again on a fresh connection, a few times, with
a short random pause; every other error is raised.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from exqueue_sql._dialect import Dialect
from exqueue_sql._urls import IDLE_PING_SECONDS

T = TypeVar("T")

_RETRIES = 6  # deadlocks and serialization failures are retried this often


class Attempt:
    """One try of a transaction; ``committing`` is set once COMMIT may have been sent."""

    __slots__ = ("committing",)

    def __init__(self) -> None:
        self.committing = False


class Runner:
    """Runs work in transactions on ``engine``, with the dialect's engines and hooks."""

    def __init__(self, engine: Engine, dialect: Dialect) -> None:
        self.engine = engine
        self.dialect = dialect

    def run(
        self,
        work: Callable[[Connection], T],
        *,
        read: bool = False,
        relaxed: bool = False,
        single: bool = False,
    ) -> T:
        """Run ``work`` in one transaction, retrying deadlocks and serialization failures.

        ``relaxed`` marks a transition whose loss in a database crash only makes a
        job run again (a claim, a success, a lease extension): a dialect may commit
        it without waiting for the disk. Enqueues, retries and deaths always wait,
        so a job is never lost and no error goes unrecorded. ``single`` says
        ``work`` is one statement, which runs without BEGIN or COMMIT where the
        dialect offers an autocommit engine. ``read`` tags a read-only transaction.
        """
        if single:
            kept = self.dialect.kept(relaxed)
            if kept is not None:
                return self.retrying(lambda attempt: kept.run(work))
        fast = self.dialect.single_engine(relaxed) if single else None
        if fast is not None:
            engine = fast

            def once(attempt: Attempt) -> T:
                with engine.connect() as conn:
                    return work(conn)

            return self.retrying(once)

        def transaction(attempt: Attempt) -> T:
            with self.dialect.lock, self.engine.connect() as conn:
                if read:
                    conn.execution_options(exqueue_read=True)
                with conn.begin():
                    self.dialect.begin(conn, relaxed)
                    result = work(conn)
                    attempt.committing = True
                return result

        return self.retrying(transaction)

    def retrying(self, once: Callable[[Attempt], T]) -> T:
        """Call ``once`` until it returns, while its error is safe to run again."""
        for n in range(_RETRIES):
            attempt = Attempt()
            try:
                return once(attempt)
            except DBAPIError as exc:
                if exc.connection_invalidated:
                    # A connection that broke before COMMIT was sent committed
                    # nothing, so the transaction runs again on a fresh one.
                    again = not attempt.committing
                else:
                    again = self.dialect.transient(exc)
                if n == _RETRIES - 1 or not again:
                    self.dialect.failed(exc)
                    raise
            time.sleep(random.uniform(0.001, 0.01) * 2**n)
        raise AssertionError("unreachable")


class Kept:
    """Connections of ``engine`` kept checked out between one-statement calls.

    Checking a connection out of SQLAlchemy's pool and back in (a Connection
    object, the pool's events and bookkeeping) cost about 28 µs per call, as much
    as a claim's own Python on a fast database; the hot single statements (a
    claim, a success, the two together) come several times per job. Idle ones
    wait here, the most recently used first, at most ``keep`` of them: never more
    are out of the pool than the calls that ran at once. One idle for longer than
    the pool's idle ping (``ping_when_idle``) is pinged as the pool would, so a
    connection left over from a server restart is still found out before it is used.
    """

    __slots__ = ("engine", "keep", "idle", "closed")

    def __init__(self, engine: Engine, keep: int) -> None:
        self.engine = engine
        self.keep = keep
        #: (connection, monotonic time it became idle); list.pop and append are atomic.
        self.idle: list[tuple[Connection, float]] = []
        self.closed = False

    def run(self, work: Callable[[Connection], T]) -> T:
        """``work`` on a kept connection (autocommit: it leaves no transaction open)."""
        try:
            conn, since = self.idle.pop()
        except IndexError:
            conn = self.engine.connect()
        else:
            if time.monotonic() - since >= IDLE_PING_SECONDS:
                conn = self._pinged(conn)
        try:
            result = work(conn)
            if conn.in_transaction():
                # A statement run through SQLAlchemy (not the driver's cursor) began
                # one; in autocommit mode it holds nothing, and ends as a checkin would.
                conn.rollback()
        except BaseException as exc:
            # Back to the pool, which replaces a connection found broken.
            conn.close()
            if isinstance(exc, DBAPIError) and exc.connection_invalidated:
                # The server went away: the others idle here are as dead.
                self.clear()
            raise
        if self.closed or len(self.idle) >= self.keep:
            conn.close()
        else:
            self.idle.append((conn, time.monotonic()))
        return result

    def _pinged(self, conn: Connection) -> Connection:
        """``conn`` if it answers a ping, else a fresh checkout in its place."""
        dialect = self.engine.dialect
        dbapi = conn.connection.dbapi_connection
        try:
            if dbapi is None:
                raise dialect.loaded_dbapi.Error("connection closed")
            dialect.do_ping(dbapi)
        except dialect.loaded_dbapi.Error:
            conn.invalidate()
            conn.close()
            return self.engine.connect()
        return conn

    def clear(self) -> None:
        """Give every idle connection back to the pool."""
        while True:
            try:
                conn, _ = self.idle.pop()
            except IndexError:
                return
            conn.close()

    def close(self) -> None:
        """Stop keeping connections (before the engine is disposed)."""
        self.closed = True
        self.clear()


def connection_of(transaction: object) -> Connection:
    """The connection under a caller's Connection, Session or Transaction (enqueue_in)."""
    if isinstance(transaction, Connection):
        return transaction
    from sqlalchemy.engine import Transaction
    from sqlalchemy.orm import Session

    if isinstance(transaction, Session):
        return transaction.connection()
    if isinstance(transaction, Transaction):
        return transaction.connection
    raise TypeError(
        "enqueue_in needs a SQLAlchemy Connection, Transaction or Session, "
        f"not {type(transaction).__name__}"
    )
