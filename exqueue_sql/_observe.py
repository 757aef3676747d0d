"""SQLStorage's live nodes and outcome history (capabilities ``NODES`` and ``HISTORY``).

Two tables join the jobs table's ``MetaData`` (:func:`observe_tables`, called
by ``_schema.tables``) and are created at open in stores made before they
existed (:func:`create_observe_tables`, under the schema lock):

- ``{prefix}nodes``: one row per node, replaced on each heartbeat (an upsert);
  ``workers`` is a JSON object of worker type to concurrency, ``types`` one of
  worker type to its published settings, ``schedules`` one of schedule name
  to its published definition (columns added later: NULL in rows of nodes
  that published none).
- ``{prefix}history``: one row per (worker, minute). ``add_history`` adds to
  the row with the dialect's own upsert (``ON CONFLICT ... DO UPDATE`` on
  SQLite and PostgreSQL, ``ON DUPLICATE KEY UPDATE`` on MariaDB/MySQL), so
  nodes writing the same minute at once each add their counts and none is lost.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    inspect,
    or_,
    select,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.schema import CreateColumn

from exqueue.storage import (
    HistoryCount,
    NodeInfo,
    history_problem,
    node_problem,
    schedules_as_json,
    schedules_from_json,
    types_as_json,
    types_from_json,
)

if TYPE_CHECKING:
    from exqueue_sql._runner import Runner


def observe_tables(prefix: str, metadata: MetaData, options: dict[str, Any]) -> None:
    """Add the nodes and history tables of ``prefix`` to ``metadata`` (the jobs table's)."""
    Table(
        f"{prefix}nodes",
        metadata,
        Column("name", String(255), primary_key=True),
        Column("host", String(255), nullable=False),
        Column("pid", BigInteger, nullable=False),
        Column("started_at", Double, nullable=False),
        Column("seen_at", Double, nullable=False),
        Column("workers", Text, nullable=False),
        Column("running", Integer, nullable=False),
        # Added in place to stores made before it (NULL there: no settings published).
        Column("types", Text, nullable=True),
        Column("schedules", Text, nullable=True),
        **options,
    )
    Table(
        f"{prefix}history",
        metadata,
        Column("worker", String(255), primary_key=True),
        Column("minute", BigInteger, primary_key=True, autoincrement=False),
        Column("succeeded", BigInteger, nullable=False),
        Column("failed", BigInteger, nullable=False),
        Column("dead", BigInteger, nullable=False),
        Column("run_time", Double, nullable=False),
        Index(f"{prefix}history_minute", "minute"),
        **options,
    )


def create_observe_tables(conn: Connection, metadata: MetaData, prefix: str) -> None:
    """Create the nodes and history tables in a store made before they existed, and
    add the nodes table's ``types`` and ``schedules`` columns to one made before they
    existed."""
    for name in ("nodes", "history"):
        metadata.tables[f"{prefix}{name}"].create(conn, checkfirst=True)
    nodes = metadata.tables[f"{prefix}nodes"]
    present = {c["name"] for c in inspect(conn).get_columns(nodes.name)}
    table = conn.dialect.identifier_preparer.format_table(nodes)
    for column in ("types", "schedules"):
        if column not in present:
            spec = CreateColumn(nodes.c[column]).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {spec}")


def _upsert(table: Table, dialect: str, rows: list[dict[str, Any]], add: bool) -> Any:
    """An INSERT of ``rows`` that, on a key already stored, replaces its other columns
    (``add=False``) or adds the new values to them (``add=True``)."""
    keys = {c.name for c in table.primary_key.columns}
    others = [c.name for c in table.columns if c.name not in keys]
    if dialect in ("mysql", "mariadb"):
        stmt: Any = mysql.insert(table).values(rows)
        new = stmt.inserted
        return stmt.on_duplicate_key_update(
            {name: (table.c[name] + new[name]) if add else new[name] for name in others}
        )
    module: Any = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(table).values(rows)
    new = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=sorted(keys),
        set_={name: (table.c[name] + new[name]) if add else new[name] for name in others},
    )


class SQLObserve:
    """The node and history calls of ``SQLStorage`` (a base class of it)."""

    prefix: str
    _jobs: Table
    _runner: Runner

    def _observe_table(self, name: str) -> Table:
        return self._jobs.metadata.tables[f"{self.prefix}{name}"]

    @property
    def _dialect_name(self) -> str:
        return self._runner.engine.dialect.name

    def beat_node(self, node: NodeInfo) -> None:
        problem = node_problem(node)
        if problem is not None:
            raise ValueError(f"{problem}; nothing was stored")
        row = {
            "name": node.name,
            "host": node.host,
            "pid": node.pid,
            "started_at": float(node.started_at),
            "seen_at": float(node.seen_at),
            "workers": json.dumps(dict(node.workers), sort_keys=True),
            "running": node.running,
            "types": json.dumps(types_as_json(node.types)),
            "schedules": json.dumps(schedules_as_json(node.schedules)),
        }
        stmt = _upsert(self._observe_table("nodes"), self._dialect_name, [row], add=False)
        self._runner.run(lambda conn: conn.execute(stmt), relaxed=True)

    def nodes(self) -> list[NodeInfo]:
        table = self._observe_table("nodes")
        stmt = select(table).order_by(table.c.name)
        rows = self._runner.run(lambda conn: conn.execute(stmt).all(), read=True)
        return [
            NodeInfo(
                r.name,
                r.host,
                int(r.pid),
                float(r.started_at),
                float(r.seen_at),
                json.loads(r.workers),
                int(r.running),
                # NULL: a node written before types were published (or by such a writer).
                types_from_json(json.loads(r.types) if r.types else None),
                schedules_from_json(json.loads(r.schedules) if r.schedules else None),
            )
            for r in rows
        ]

    def drop_nodes(self, *, before: float | None = None, name: str | None = None) -> list[str]:
        if before is None and name is None:
            return []
        table = self._observe_table("nodes")
        c = table.c
        conditions = []
        if before is not None:
            conditions.append(c.seen_at < before)
        if name is not None:
            conditions.append(c.name == name)
        where = or_(*conditions)

        def work(conn: Connection) -> list[str]:
            names = [row.name for row in conn.execute(select(c.name).where(where))]
            if names:
                conn.execute(delete(table).where(c.name.in_(names)))
            return sorted(names)

        return self._runner.run(work)

    def add_history(self, counts: Sequence[HistoryCount]) -> None:
        for count in counts:
            problem = history_problem(count)
            if problem is not None:
                raise ValueError(f"{problem}; nothing was stored")
        if not counts:
            return
        # One row per key in one statement: an upsert may not touch a row twice.
        merged: dict[tuple[str, int], list[Any]] = {}
        for count in counts:
            row = merged.setdefault((count.worker, count.minute), [0, 0, 0, 0.0])
            row[0] += count.succeeded
            row[1] += count.failed
            row[2] += count.dead
            row[3] += float(count.run_time)
        rows = [
            {
                "worker": worker,
                "minute": minute,
                "succeeded": s,
                "failed": f,
                "dead": d,
                "run_time": t,
            }
            for (worker, minute), (s, f, d, t) in sorted(merged.items())
        ]
        stmt = _upsert(self._observe_table("history"), self._dialect_name, rows, add=True)
        self._runner.run(lambda conn: conn.execute(stmt), relaxed=True)

    def history(self, *, since: int, worker: str | None = None) -> list[HistoryCount]:
        table = self._observe_table("history")
        c = table.c
        stmt = select(table).where(c.minute >= since).order_by(c.minute, c.worker)
        if worker is not None:
            stmt = stmt.where(c.worker == worker)
        rows = self._runner.run(lambda conn: conn.execute(stmt).all(), read=True)
        return [
            HistoryCount(
                r.worker, int(r.minute), int(r.succeeded), int(r.failed), int(r.dead), r.run_time
            )
            for r in rows
        ]

    def prune_history(self, before: int) -> int:
        table = self._observe_table("history")
        stmt = delete(table).where(table.c.minute < before)
        count: int = self._runner.run(lambda conn: conn.execute(stmt).rowcount)
        return count
