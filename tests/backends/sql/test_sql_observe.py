"""The SQL nodes and history tables: a store made before they existed gets them at open."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import inspect

from exqueue.storage import HistoryCount, NewJob, NodeInfo, ScheduleSettings, TypeSettings
from exqueue_sql import SQLStorage, metadata
from tests.support import services


def _url(name: str, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'old.db'}" if name == "sqlite" else services.require(name)


@pytest.mark.parametrize("name", ["sqlite", "postgres", "mysql"])
def test_a_store_without_the_observe_tables_gets_them(name: str, tmp_path: Path) -> None:
    prefix = f"o{uuid.uuid4().hex[:8]}_"
    first = SQLStorage(_url(name, tmp_path), prefix=prefix)
    try:
        first.enqueue([NewJob("kept", "w", b"", 1.0, 1.0, 1)])
        # As a store of an exqueue from before issue 17: no nodes or history table.
        for table in ("nodes", "history"):
            first._observe_table(table).drop(first.engine)
            assert not inspect(first.engine).has_table(f"{prefix}{table}")
        again = SQLStorage(_url(name, tmp_path), prefix=prefix)
        try:
            assert inspect(again.engine).has_table(f"{prefix}nodes")
            assert inspect(again.engine).has_table(f"{prefix}history")
            assert again.get("kept") is not None
            again.beat_node(NodeInfo("n", "h", 1, 1.0, 2.0, {"w": 1}))
            again.add_history([HistoryCount("w", 60, 1)])
            assert [n.name for n in again.nodes()] == ["n"]
            assert again.history(since=0) == [HistoryCount("w", 60, 1)]
        finally:
            again.close()
    finally:
        first.destroy()
        first.close()


def test_the_alembic_metadata_has_the_observe_tables() -> None:
    assert {"exqueue_nodes", "exqueue_history"} <= set(metadata.tables)


@pytest.mark.parametrize("name", ["sqlite", "postgres", "mysql"])
def test_a_nodes_table_without_types_or_schedules_gets_the_columns_and_reads_empty(
    name: str, tmp_path: Path
) -> None:
    prefix = f"o{uuid.uuid4().hex[:8]}_"
    first = SQLStorage(_url(name, tmp_path), prefix=prefix)
    try:
        first.enqueue([NewJob("kept", "w", b"", 1.0, 1.0, 1)])
        table = first.engine.dialect.identifier_preparer.quote(f"{prefix}nodes")
        with first.engine.begin() as conn:
            # The nodes table of an exqueue from before worker type settings and
            # schedule definitions were published, and a row its writer stored.
            conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN types")
            conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN schedules")
            conn.exec_driver_sql(
                f"INSERT INTO {table} (name, host, pid, started_at, seen_at, workers, running)"
                " VALUES ('old', 'h', 7, 1.0, 2.0, '{\"w\": 2}', 1)"
            )
        first.engine.dispose()
        before = {c["name"] for c in inspect(first.engine).get_columns(f"{prefix}nodes")}
        assert not {"types", "schedules"} & before
        again = SQLStorage(_url(name, tmp_path), prefix=prefix)
        try:
            columns = {c["name"] for c in inspect(again.engine).get_columns(f"{prefix}nodes")}
            assert {"types", "schedules"} <= columns
            assert again.nodes() == [NodeInfo("old", "h", 7, 1.0, 2.0, {"w": 2}, 1, {})]
            assert again.get("kept") is not None
            settings = TypeSettings(2, global_limit=3, max_attempts=5, backoff="Fixed(seconds=1)")
            every = ScheduleSettings("w", None, 30.0, "Asia/Tokyo", "run_once")
            node = NodeInfo("new", "h", 8, 1.0, 3.0, {"w": 2}, 0, {"w": settings}, {"s": every})
            again.beat_node(node)
            assert again.nodes() == [node, NodeInfo("old", "h", 7, 1.0, 2.0, {"w": 2}, 1)]
            SQLStorage(_url(name, tmp_path), prefix=prefix).close()  # a second open adds nothing
        finally:
            again.close()
    finally:
        first.destroy()
        first.close()


def test_the_alembic_metadata_has_the_types_and_schedules_columns() -> None:
    assert {"types", "schedules"} <= set(metadata.tables["exqueue_nodes"].c.keys())
