"""Type checks on what a backend returns: the core does arithmetic on these fields.

A driver that hands back ``Decimal`` times, ``memoryview`` payloads or string
counters compares equal in many places and then breaks the core later (``Decimal
+ float`` raises), so the suite insists on the declared Python types.
"""

from __future__ import annotations

from collections.abc import Mapping

from exqueue.storage import STATES, JobRecord


def check_types(record: object) -> None:
    """Fail unless ``record`` is a :class:`JobRecord` with fields of the declared types."""
    assert isinstance(record, JobRecord), f"expected a JobRecord, got {type(record).__name__}"
    problems = []
    for name in ("id", "worker"):
        if type(getattr(record, name)) is not str:
            problems.append(name)
    for name in ("seq", "attempt", "max_attempts"):
        if type(getattr(record, name)) is not int:
            problems.append(name)
    for name in ("run_at", "enqueued_at"):
        if type(getattr(record, name)) is not float:
            problems.append(name)
    if type(record.payload) is not bytes:
        problems.append("payload")
    if record.state not in STATES:
        problems.append("state")
    if not all(type(error) is str for error in record.errors):
        problems.append("errors")
    if type(record.priority) is not int:
        problems.append("priority")
    if not isinstance(record.meta, Mapping) or not all(
        type(key) is str and type(value) is str for key, value in record.meta.items()
    ):
        problems.append("meta")
    for name, kind in (
        ("lease_owner", str),
        ("lease_token", str),
        ("lease_expires", float),
        ("timeout", float),
        ("expires_at", float),
        ("unique_key", str),
        ("partition", str),
    ):
        value = getattr(record, name)
        if value is not None and type(value) is not kind:
            problems.append(name)
    assert not problems, f"job {record.id!r} has fields of the wrong type: " + ", ".join(
        f"{name}={getattr(record, name)!r}" for name in problems
    )
