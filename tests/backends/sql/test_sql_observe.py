"""The SQL nodes and history tables: a store made before they existed gets them at open."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import inspect

from exqueue.storage import HistoryCount, NewJob, NodeInfo
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
