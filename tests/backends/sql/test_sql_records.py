"""Reading a claimed row by position (``parse_values``) says what reading it by name does."""

from __future__ import annotations

import math
from typing import Any

import pytest

from exqueue.storage import RUNNING, JobRecord
from exqueue_sql._records import Damaged, DictRow, parse, parse_values

ROW: dict[str, Any] = {
    "finished": ["x"], "seq": 7, "id": "a", "worker": "w", "payload": b"[[1],{}]",
    "state": RUNNING, "attempt": 1, "max_attempts": 3, "run_at": 1.0, "enqueued_at": 1.0,
    "errors": "[]", "error_count": 0, "lease_owner": "o", "lease_token": "t",
    "lease_expires": 61.0, "priority": 0, "meta": "{}", "timeout": None, "expires_at": None,
    "unique_key": None, "unique_period": None, "partition_key": None,
}  # fmt: skip


def by_name(row: dict[str, Any]) -> JobRecord | Damaged:
    return parse(DictRow(tuple(row), tuple(row.values())))


def by_position(row: dict[str, Any], known: dict[str, Any] | None = None) -> Any:
    return parse_values(tuple(row), tuple(row.values()), known)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"errors": '["e1", "e2"]', "meta": '{"k": "v"}', "partition_key": "p", "timeout": 2.0},
        {"run_at": math.nan},
        {"meta": "[1]", "attempt": "x"},
        {"errors": '["e1"]', "error_count": 0, "state": "nonsense"},
    ],
)
def test_by_position_reads_as_by_name(changes: dict[str, Any]) -> None:
    row = ROW | changes
    assert by_position(row) == by_name(row)


def test_known_fields_stand_for_columns_not_returned() -> None:
    known = {"state": RUNNING, "worker": "w", "lease_owner": "o", "lease_token": "t"}
    known["lease_expires"] = 61.0
    trimmed = {name: value for name, value in ROW.items() if name not in known}
    assert by_position(trimmed, known) == by_name(ROW)
    damaged = by_position(trimmed | {"max_attempts": -math.inf}, known)
    assert isinstance(damaged, Damaged) and "max_attempts" in damaged.reason


def test_repeated_column_names_are_read_as_by_name() -> None:
    names = (*ROW, "id")
    values = (*ROW.values(), "a")
    assert parse_values(names, values) == by_name(ROW)
