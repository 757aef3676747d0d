"""Hot-path statements built once per storage and run with values only.

Building a SQLAlchemy statement on every call (its clauses, then its cache key
for the compiled cache) costs more Python than running it on a fast database:
a drain claims and completes hundreds of times a second. A claim, a completion
or a retry is therefore written once, as Core expressions with named
``bindparam`` values, and compiled here for the engine's dialect; each call
sends only its values through ``exec_driver_sql``. The rows come back as the
driver gives them (no SQLAlchemy result processing), which ``_records`` reads
as it reads any row.

The hottest statements skip SQLAlchemy's result machinery too: :meth:`Prepared.rows`
runs them on the pooled connection's own DB-API cursor (with psycopg, one cursor
kept per connection) and returns its tuples.
A result's metadata (a column object per column, each looked up for a result
processor) is built on every ``exec_driver_sql``, and for a claim's 22 columns
that cost more than half the client's CPU per job on PostgreSQL. Errors still
go through SQLAlchemy's own handler (wrapped, a broken connection and its pool
invalidated), so the runner's retries work the same.

Statements whose shape depends on a count (an ``IN`` list of a batch) are
written out per size by :func:`marks`, in the driver's own placeholder style.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, CursorResult, Engine
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import _anonymous_label
from sqlalchemy.sql.expression import ClauseElement


class Prepared:
    """One statement compiled for one engine's dialect; ``run`` binds only values."""

    __slots__ = ("sql", "names", "_defaults", "_order")

    def __init__(self, engine: Engine, statement: ClauseElement) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        assert isinstance(compiled, SQLCompiler)  # DML and SELECT compile to one
        self.sql = str(compiled)
        if "POSTCOMPILE" in self.sql:
            # An expanding IN or a literal-rendered value: its text depends on the values.
            raise ValueError(f"not a fixed statement: {self.sql}")
        #: Values fixed when the statement was built (constants such as a state).
        self._defaults: dict[str, Any] = dict(compiled.params)
        if engine.dialect.paramstyle == "pyformat":
            # Named marks (psycopg, PyMySQL) are found in the text by name; the order
            # of SQLite's positional ones (``_order``) would shift with each one removed.
            self._inline(compiled)
        #: Parameter names in order for a positional driver (SQLite's qmark), else None.
        self._order = compiled.positiontup
        #: The result's column names, as the driver names them (read by the first ``rows``).
        self.names: tuple[str, ...] | None = None

    def _inline(self, compiled: SQLCompiler) -> None:
        """Write the statement's constants (a state, an increment) into its text.

        Each parameter costs the driver a conversion and the wire a value on
        every call (a finish-and-claim sent 13, 5 of them constants), and a
        constant is one more thing a prepared statement's generic plan knows.
        Only the anonymous values SQLAlchemy made from literals are written in
        (a named ``bindparam`` is a caller's), and only plain words and integers,
        which need no quoting beyond the quotes around a word.
        """
        for bind, name in compiled.bind_names.items():
            value = self._defaults.get(name)
            if not isinstance(bind.key, _anonymous_label) or not _plain(value):
                continue
            mark = f"%({name})s"
            if mark not in self.sql:
                continue
            text = f"'{value}'" if isinstance(value, str) else str(value)
            self.sql = self.sql.replace(mark, text)
            del self._defaults[name]

    def params(self, values: Mapping[str, Any]) -> dict[str, Any] | tuple[Any, ...]:
        """The driver's parameters: ``values`` over the constants, named or in order."""
        merged = {**self._defaults, **values}
        if self._order is None:
            return merged
        return tuple(merged[name] for name in self._order)

    def run(self, conn: Connection, **values: Any) -> CursorResult[Any]:
        return conn.exec_driver_sql(self.sql, self.params(values))

    def rows(self, conn: Connection, **values: Any) -> list[tuple[Any, ...]]:
        """The statement's rows as the driver's tuples, run on ``conn``'s own cursor
        (in its transaction, if it has one); the column names are :attr:`names`."""
        found, names = driver_rows(conn, self.sql, self.params(values), self.names is None)
        if names is not None:
            self.names = names
        return found


def _plain(value: object) -> bool:
    """Whether ``value`` reads the same written into SQL text as sent as a parameter."""
    if isinstance(value, str):
        return value.isascii() and value.isidentifier()
    return type(value) is int


def driver_rows(
    conn: Connection, sql: str, params: Any, named: bool = False
) -> tuple[list[tuple[Any, ...]], tuple[str, ...] | None]:
    """The rows of ``sql`` (a statement that returns rows) run on ``conn``'s DB-API
    cursor, and with ``named`` the column names as the driver gives them."""
    pooled = conn.connection
    kept = _kept_cursor(pooled)
    cursor = pooled.cursor() if kept is None else kept
    try:
        cursor.execute(sql, params)
        names = tuple(column[0] for column in cursor.description) if named else None
        return cast("list[tuple[Any, ...]]", cursor.fetchall()), names
    except BaseException as exc:
        if kept is not None:
            # A cursor whose call failed or was interrupted is not used again; the
            # next call opens a fresh one (and this one is closed below).
            pooled.info.pop(_KEPT, None)
            kept = None
        if isinstance(exc, conn.dialect.loaded_dbapi.Error):
            # What exec_driver_sql does with a driver error: wrapped, handle_error
            # events, and on a disconnect the connection and the pool invalidated.
            conn._handle_dbapi_exception(exc, sql, params, cursor, None)
        raise
    finally:
        if kept is None:
            # A cursor of a connection just invalidated may refuse to close; nothing is lost.
            with contextlib.suppress(Exception):
                cursor.close()


#: Key, in a pooled connection's ``info``, of its kept cursor and the DB-API connection it is of.
_KEPT = "exqueue_cursor"


def _kept_cursor(pooled: Any) -> Any:
    """The cursor kept on ``pooled`` (a psycopg connection) for every ``driver_rows``
    call, or None for other drivers, whose cursors are opened per call.

    A psycopg cursor remembers, per column type, how to read a value: a fresh
    cursor per call looks up every column's reader again, which on a fast
    database was about an eighth of the client's CPU per finish-and-claim. The pooled
    connection's ``info`` outlives checkouts; the cursor is kept with the DB-API
    connection it belongs to, so a connection the pool replaced gets a new one.
    """
    dbapi = pooled.dbapi_connection
    if type(dbapi).__module__ != "psycopg":
        return None
    kept = pooled.info.get(_KEPT)
    if kept is not None and kept[0] is dbapi and not kept[1].closed:
        return kept[1]
    cursor = dbapi.cursor()
    pooled.info[_KEPT] = (dbapi, cursor)
    return cursor


def mark(engine: Engine) -> str:
    """The driver's positional placeholder: ``?`` for SQLite, ``%s`` for the others."""
    return "?" if engine.dialect.paramstyle == "qmark" else "%s"


#: Items per ``IN (...)`` list: a batch longer than this goes in several statements.
CHUNK = 500

_T = TypeVar("_T")


def chunked(items: Sequence[_T]) -> Iterator[list[_T]]:
    """``items`` in lists of at most :data:`CHUNK`, in order."""
    for start in range(0, len(items), CHUNK):
        yield list(items[start : start + CHUNK])


def marks(mark: str, count: int, width: int = 1) -> str:
    """``count`` placeholders (``width`` > 1: row values), comma-separated, for an ``IN`` list."""
    one = mark if width == 1 else f"({', '.join([mark] * width)})"
    return ", ".join([one] * count)
