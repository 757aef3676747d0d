"""Hot-path statements built once per storage and run with values only.

Building a SQLAlchemy statement on every call (its clauses, then its cache key
for the compiled cache) costs more Python than running it on a fast database:
a drain claims and completes hundreds of times a second. A claim, a completion
or a retry is therefore written once, as Core expressions with named
``bindparam`` values, and compiled here for the engine's dialect; each call
sends only its values through ``exec_driver_sql``. The rows come back as the
driver gives them (no SQLAlchemy result processing), which ``_records`` reads
as it reads any row.

Statements whose shape depends on a count (an ``IN`` list of a batch) are
written out per size by :func:`marks`, in the driver's own placeholder style.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, CursorResult, Engine
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement


class Prepared:
    """One statement compiled for one engine's dialect; ``run`` binds only values."""

    __slots__ = ("sql", "_defaults", "_order")

    def __init__(self, engine: Engine, statement: ClauseElement) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        assert isinstance(compiled, SQLCompiler)  # DML and SELECT compile to one
        self.sql = str(compiled)
        if "POSTCOMPILE" in self.sql:
            # An expanding IN or a literal-rendered value: its text depends on the values.
            raise ValueError(f"not a fixed statement: {self.sql}")
        #: Values fixed when the statement was built (constants such as a state).
        self._defaults: dict[str, Any] = dict(compiled.params)
        #: Parameter names in order for a positional driver (SQLite's qmark), else None.
        self._order = compiled.positiontup

    def params(self, values: Mapping[str, Any]) -> dict[str, Any] | tuple[Any, ...]:
        """The driver's parameters: ``values`` over the constants, named or in order."""
        merged = {**self._defaults, **values}
        if self._order is None:
            return merged
        return tuple(merged[name] for name in self._order)

    def run(self, conn: Connection, **values: Any) -> CursorResult[Any]:
        return conn.exec_driver_sql(self.sql, self.params(values))


def mark(engine: Engine) -> str:
    """The driver's positional placeholder: ``?`` for SQLite, ``%s`` for the others."""
    return "?" if engine.dialect.paramstyle == "qmark" else "%s"


def marks(mark: str, count: int, width: int = 1) -> str:
    """``count`` placeholders (``width`` > 1: row values), comma-separated, for an ``IN`` list."""
    one = mark if width == 1 else f"({', '.join([mark] * width)})"
    return ", ".join([one] * count)
