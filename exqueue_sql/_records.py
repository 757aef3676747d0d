"""Reading SQL job rows into records, and telling a damaged row from a good one.

A row is damaged when a column holds what exqueue never writes there (a
hostile or corrupt value: text in a number column on SQLite, NaN, an errors
column that is not a JSON list of strings, an unknown state). ``parse`` gives
a claim or a recovery either the record or a :class:`Damaged` with the reason
and the column values that make the row dead and readable again, so the
damaged job dies alone and its neighbours go on. ``readable`` never fails, so
one damaged row cannot break listing the queue.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Row

from exqueue.storage import DEAD, STATES, JobRecord, JobState, clip_error, kept_errors

DAMAGED = "damaged stored job: "


class Damaged(NamedTuple):
    """A row that cannot be read as a job: why, and the values that bury it."""

    seq: int
    id: str
    reason: str
    #: Columns to write to make the row a readable dead job (state, errors, lease, resets).
    values: dict[str, Any]


def _int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value)
    raise ValueError


def _float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError
    number = float(value)
    if not math.isfinite(number):
        raise ValueError
    return number


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError
    return value


def _optional(parse: Callable[[object], Any]) -> Callable[[object], Any]:
    return lambda value: None if value is None else parse(value)


def _payload(value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ValueError
    return bytes(value)


def _state(value: object) -> JobState:
    if value not in STATES:
        raise ValueError
    return value


def _meta(value: object) -> dict[str, str]:
    if value == "{}":
        return {}  # most jobs: no JSON parse
    found = json.loads(_text(value))
    if not isinstance(found, dict) or not all(isinstance(v, str) for v in found.values()):
        raise ValueError
    return found


def dump_meta(meta: Mapping[str, str]) -> str:
    """``meta`` as stored: JSON, keys sorted, ASCII only (every database takes it as is)."""
    return json.dumps(dict(meta), sort_keys=True, separators=(",", ":"))


def meta_needle(key: str, value: str) -> str:
    """The text an entry ``key: value`` takes inside :func:`dump_meta`'s output."""
    return json.dumps(key) + ":" + json.dumps(value)


def _errors(value: object) -> tuple[str, ...]:
    if value == "[]":
        return ()  # most jobs: no JSON parse
    found = json.loads(_text(value))
    if not isinstance(found, list) or not all(isinstance(e, str) for e in found):
        raise ValueError
    return tuple(found)


# Each column: how to read it, and what a damaged value is replaced with.
_COLUMNS: dict[str, tuple[Callable[[object], Any], Any]] = {
    "id": (_text, ""),
    "worker": (_text, ""),
    "payload": (_payload, b""),
    "state": (_state, DEAD),
    "attempt": (_int, 0),
    "max_attempts": (_int, 0),
    "run_at": (_float, 0.0),
    "enqueued_at": (_float, 0.0),
    "errors": (_errors, ()),
    "error_count": (_int, 0),
    "lease_owner": (_optional(_text), None),
    "lease_token": (_optional(_text), None),
    "lease_expires": (_optional(_float), None),
    "priority": (_int, 0),
    "meta": (_meta, {}),
    "timeout": (_optional(_float), None),
    "expires_at": (_optional(_float), None),
    "unique_key": (_optional(_text), None),
    # JobRecord.partition (a column name that is no SQL keyword).
    "partition_key": (_optional(_text), None),
}
# Columns reset in the row itself when damaged; the others only read as their default.
_RESETS: dict[str, Any] = {
    "attempt": 0,
    "max_attempts": 0,
    "run_at": 0.0,
    "enqueued_at": 0.0,
    "priority": 0,
    "meta": "{}",
    "timeout": None,
    "expires_at": None,
    "unique_key": None,
    "partition_key": None,
}


def read(m: Mapping[Any, Any]) -> tuple[dict[str, Any], list[str]]:
    """The columns present in ``m``, read; and a description of each damaged one."""
    fields: dict[str, Any] = {}
    bad: list[str] = []
    for name, (parse, default) in _COLUMNS.items():
        if name not in m:
            continue
        try:
            fields[name] = parse(m[name])
        except (ValueError, TypeError, OverflowError):
            fields[name] = default
            bad.append(f"{name}={m[name]!r}"[:80])
    if "partition_key" in fields:
        fields["partition"] = fields.pop("partition_key")
    _bound_errors(fields)
    return fields, bad


def _bound_errors(fields: dict[str, Any]) -> None:
    """Keep ``fields``' errors within the bound: a row written before the bound holds
    every error and a count of 0."""
    if "errors" in fields:
        stored = fields["errors"]
        fields["errors"] = kept_errors(stored)
        fields["error_count"] = max(fields.get("error_count", 0), len(stored))


def with_errors(fields: dict[str, Any], bad: list[str], *new: str) -> tuple[str, int]:
    """The stored ``(errors, error_count)`` of a row after ``new`` errors are recorded.

    ``fields`` and ``bad`` are what :func:`read` made of the row's ``errors`` and
    ``error_count``; an unreadable history (a damaged row) is kept as far as it
    reads, plus a note naming what did not.
    """
    notes = [DAMAGED + ", ".join(bad)] if bad else []
    added = [*notes, *(clip_error(error) for error in new)]
    errors = kept_errors([*fields.get("errors", ()), *added])
    return json.dumps(errors), fields.get("error_count", 0) + len(added)


def damage(m: Mapping[Any, Any], fields: dict[str, Any], bad: list[str]) -> Damaged:
    """The burial of a row whose ``bad`` columns could not be read."""
    reason = DAMAGED + ", ".join(bad)
    values: dict[str, Any] = {
        "state": DEAD,
        "errors": json.dumps(kept_errors([*fields.get("errors", ()), reason])),
        "error_count": fields.get("error_count", 0) + 1,
        "lease_owner": None,
        "lease_token": None,
        "lease_expires": None,
    }
    for entry in bad:
        name = entry.split("=", 1)[0]
        if name in _RESETS:
            values[name] = _RESETS[name]
    return Damaged(int(m["seq"]), str(m["id"]), reason, values)


def parse(row: Row[Any] | DictRow) -> JobRecord | Damaged:
    """The job in a whole row, or why it is damaged."""
    m = row._asdict()  # a plain dict: read() looks every column up twice
    fields, bad = read(m)
    if bad:
        return damage(m, fields, bad)
    return JobRecord(seq=int(m["seq"]), **fields)


#: Per column names (as a driver gives them): where ``seq`` is, and for each other
#: known column its position, its record field and its reader.
_Plan = tuple[int, tuple[tuple[int, str, Callable[[object], Any]], ...]]
_plans: dict[tuple[str, ...], _Plan | None] = {}


def _plan(names: tuple[str, ...]) -> _Plan | None:
    if len(set(names)) != len(names) or "seq" not in names:
        return None  # read by name, as parse reads it
    readers = tuple(
        (names.index(name), "partition" if name == "partition_key" else name, reader)
        for name, (reader, _) in _COLUMNS.items()
        if name in names
    )
    return names.index("seq"), readers


def parse_values(
    names: tuple[str, ...], values: Sequence[Any], known: Mapping[str, Any] | None = None
) -> JobRecord | Damaged:
    """:func:`parse` of a row read off a DB-API cursor: its column ``names`` and ``values``,
    with ``known``, the record fields the statement itself set (not read back).

    A claim reads every row it takes; by position, with the readers planned
    once per ``names``, a good row costs about half what building a mapping and
    looking each column up in it does. A row a reader refuses is read by name,
    as :func:`parse` reads it, to say which columns are damaged.
    """
    try:
        plan = _plans[names]
    except KeyError:
        plan = _plans[names] = _plan(names)
    fields: dict[str, Any] | None = None
    if plan is not None and len(values) == len(names):
        seq_at, readers = plan
        try:
            fields = {field: reader(values[at]) for at, field, reader in readers}
        except (ValueError, TypeError, OverflowError):
            fields = None
    if fields is None:
        m = dict(zip(names, values, strict=True))
        fields, bad = read(m)
        if bad:
            return damage(m, fields, bad)
        seq = int(m["seq"])
    else:
        seq = int(values[seq_at])
        _bound_errors(fields)
    if known:
        fields.update(known)
    return JobRecord(seq=seq, **fields)


def readable(row: Row[Any]) -> JobRecord:
    """A record for listing and ``get``, even from a damaged row.

    A damaged row is shown with defaults in its unreadable columns (an unknown
    state reads as dead) and a last error naming them.
    """
    m = row._mapping
    fields, bad = read(m)
    if bad:
        fields["errors"] = (*fields["errors"], DAMAGED + ", ".join(bad))
    return JobRecord(seq=int(m["seq"]), **fields)


class DictRow:
    """A row read off a raw DB-API cursor (a multi-statement call), shaped like the
    SQLAlchemy rows :func:`parse` and :func:`read` take."""

    __slots__ = ("_mapping",)

    def __init__(self, names: Sequence[str], values: Sequence[Any]) -> None:
        self._mapping = dict(zip(names, values, strict=True))

    def _asdict(self) -> dict[str, Any]:
        return self._mapping
