"""The SQL schedules table: a store made before it existed gets it at open, rows kept."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import inspect

from exqueue.storage import NewJob, ScheduleState
from exqueue_sql import SQLStorage, metadata
from tests.support import services


def _url(name: str, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'old.db'}" if name == "sqlite" else services.require(name)


@pytest.mark.parametrize("name", ["sqlite", "postgres", "mysql"])
def test_a_store_without_the_schedules_table_gets_it(name: str, tmp_path: Path) -> None:
    prefix = f"u{uuid.uuid4().hex[:8]}_"
    first = SQLStorage(_url(name, tmp_path), prefix=prefix)
    try:
        job = NewJob("kept", "w", b"", 1.0, 1.0, 1)
        first.enqueue([job])
        # As a store of an exqueue from before schedules: no schedules table.
        first._schedules.drop(first.engine)
        assert not inspect(first.engine).has_table(f"{prefix}schedules")
        again = SQLStorage(_url(name, tmp_path), prefix=prefix)
        try:
            assert inspect(again.engine).has_table(f"{prefix}schedules")
            assert again.get("kept") is not None
            assert again.fire("s", 5.0, NewJob("t", "w", b"", 5.0, 5.0, 1))
            assert again.schedules() == [ScheduleState("s", 5.0, False)]
        finally:
            again.close()
    finally:
        first.destroy()
        first.close()


def test_the_alembic_metadata_has_the_schedules_table() -> None:
    assert "exqueue_schedules" in metadata.tables
