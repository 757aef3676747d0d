"""SQLStorage's native async enqueue on PostgreSQL (capability ``ASYNC_ENQUEUE``).

The same one-statement insert as :meth:`SQLStorage.enqueue` (advisory locks,
wake-up notification and rows, ``PostgresDialect.insert_params``), sent
through psycopg's ``AsyncConnection`` in autocommit mode: one round trip and one
commit, awaited on the caller's loop, no thread. Connections are opened from the
engine's own connect arguments (with the storage's timeouts, as the wake-up
listener's are), kept per event loop (a psycopg async connection belongs to the
loop that opened it) and reused: a few idle ones per loop, so concurrent
handlers do not queue behind one connection.

Jobs with a unique key, and jobs stored dead at enqueue, take the
multi-statement path of the sync enqueue (its key rows, its retries), on a
worker thread (``asyncio.to_thread``), as every enqueue does on the other SQL
databases.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from exqueue.storage import NewJob
from exqueue_sql import _unique
from exqueue_sql._limits import has_dead

if TYPE_CHECKING:
    import psycopg

    from exqueue_sql._postgres import PostgresDialect

log = logging.getLogger("exqueue")

#: Idle connections kept per event loop; more are opened while more enqueues overlap.
MAX_IDLE = 4
#: Tries of a statement that failed on a serialization failure or a deadlock.
RETRIES = 5
_RETRY_SQLSTATES = ("40001", "40P01")


class SQLAsyncEnqueue:
    """``aenqueue`` of ``SQLStorage`` (a base class of it): native on PostgreSQL with
    psycopg, a worker thread elsewhere."""

    _native: PostgresAsyncEnqueue | None = None

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        raise NotImplementedError

    def _open_native_enqueue(self, dialect: object, duplicate: str) -> bool:
        """Set up the native path where the dialect allows it; whether it did."""
        from exqueue_sql._postgres import PostgresDialect

        if isinstance(dialect, PostgresDialect) and dialect.engine.dialect.driver == "psycopg":
            self._native = PostgresAsyncEnqueue(dialect, duplicate)
        return self._native is not None

    async def aenqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        native = self._native
        if native is not None:
            if len({job.id for job in jobs}) != len(jobs):
                raise ValueError(native.duplicate)
            if not jobs:
                return []
            done = await native.enqueue(jobs)
            if done is not None:
                return done
        return await asyncio.to_thread(self.enqueue, jobs)

    def _close_native_enqueue(self) -> None:
        if self._native is not None:
            self._native.close()


class PostgresAsyncEnqueue:
    """The native path: psycopg ``AsyncConnection`` objects, a few idle per event loop."""

    def __init__(self, dialect: PostgresDialect, duplicate: str) -> None:
        self._dialect = dialect
        self.duplicate = duplicate
        engine = dialect.engine
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        if dialect.timeouts is not None:
            from exqueue_sql._postgres import _add_timeouts

            _add_timeouts(cparams, dialect.timeouts)
        self._cargs: list[Any] = list(cargs)
        self._cparams: dict[str, Any] = dict(cparams)
        self._idle: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Any]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()  # loops of several threads share this object
        self._closed = False

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[str] | None:
        """Insert ``jobs`` (no unique keys, none stored dead) on this loop; None: not
        for this path."""
        if _unique.keys_of(jobs) or has_dead(jobs):
            return None
        import psycopg

        sql, params = self._dialect.insert_params(jobs)
        loop = asyncio.get_running_loop()
        for attempt in range(RETRIES):
            conn = await self._checkout(loop)
            try:
                await conn.execute(sql, params)
            except psycopg.errors.UniqueViolation as exc:
                self._checkin(loop, conn)
                raise ValueError(self.duplicate) from exc
            except psycopg.Error as exc:
                if conn.closed or conn.broken:
                    await conn.close()
                    raise  # it may have committed: running it again could store it twice
                self._checkin(loop, conn)
                if exc.sqlstate not in _RETRY_SQLSTATES or attempt == RETRIES - 1:
                    raise
                await asyncio.sleep(0.001 * 2**attempt)
                continue
            except BaseException:
                # Cancelled (or worse) mid-statement: the connection's state is unknown.
                await asyncio.shield(conn.close())
                raise
            self._checkin(loop, conn)
            return [job.id for job in jobs]
        raise AssertionError("unreachable")

    async def _checkout(self, loop: asyncio.AbstractEventLoop) -> psycopg.AsyncConnection[Any]:
        import psycopg

        with self._lock:
            if self._closed:
                raise RuntimeError("the storage is closed")
            idle = self._idle.get(loop)
            while idle:
                conn = idle.pop()
                if not conn.closed:
                    return conn  # type: ignore[no-any-return]
        return await psycopg.AsyncConnection.connect(*self._cargs, autocommit=True, **self._cparams)

    def _checkin(self, loop: asyncio.AbstractEventLoop, conn: psycopg.AsyncConnection[Any]) -> None:
        with self._lock:
            idle = self._idle.get(loop)
            if idle is None:
                idle = self._idle[loop] = []
                # When the loop goes (asyncio.run returns), so do its connections.
                weakref.finalize(loop, _finish, idle)
            if not self._closed and len(idle) < MAX_IDLE:
                idle.append(conn)
                return
        # Too many idle, or closed meanwhile: let it go without awaiting here.
        conn.pgconn.finish()

    def close(self) -> None:
        """Close the idle connections of every loop (their sockets, from any thread)."""
        with self._lock:
            self._closed = True
            idle = [conn for conns in self._idle.values() for conn in conns]
            self._idle.clear()
        _finish(idle)


def _finish(conns: list[Any]) -> None:
    """Close connections' sockets without their loop (from any thread, loop gone or not)."""
    while conns:
        conn = conns.pop()
        try:
            conn.pgconn.finish()
        except Exception:  # closing is best effort: the server drops it anyway
            log.debug("closing an async enqueue connection failed", exc_info=True)
