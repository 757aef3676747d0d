"""One backend location shared by every example of a state-machine run, and the clock.

Opening a fresh SQL schema or Redis namespace per example would dominate the run
time, so :class:`StorageSession` keeps one storage open and empties it through
its own ``recover`` and ``delete`` before each example.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace

from conformance.model import Model, ModelJob
from conformance.records import check_types
from exqueue.storage import JobRecord, Storage

StorageFactory = Callable[[], Storage]

#: The fake clock starts at a realistic epoch time (a backend that keeps times in
#: single precision or whole seconds cannot pass), and moves on a 0.5 s grid.
T0 = 1_700_000_000.0
#: Far enough in the future that every lease of an example has expired.
FAR = T0 + 10_000_000.0
LIST_ALL = 10_000

# Names carry SQL pattern characters and ':' (a key separator), owners too: a
# backend matching them with LIKE or splitting keys on ':' confuses them.
# "app.re%port_:x" read as a LIKE pattern matches "app.re port!:x".
WORKERS = ("app.re port!:x", "app.re%port_:x", "app.ünïcødé · 名前 ✓")
SERIAL_WORKERS = ("app.serial_a", "app.serial_b")
ALL_WORKERS = WORKERS + SERIAL_WORKERS
OWNERS = ("node_1", "nodeX1", "nœud:%3")


class StorageSession:
    """One backend location reused by every example of a test."""

    def __init__(self, factory: StorageFactory) -> None:
        self.factory = factory
        self.storage: Storage | None = None

    def fresh(self) -> Storage:
        """The open storage, emptied of whatever an earlier example left."""
        if self.storage is None:
            self.storage = self.factory()
        storage = self.storage
        storage.recover(FAR, error="conformance: emptying the store between examples")
        for _ in range(50):
            left = storage.list_jobs(limit=LIST_ALL)
            if not left:
                return storage
            for record in left:
                storage.delete(record.id)
        raise AssertionError(
            "the storage could not be emptied between examples with recover() and "
            f"delete(); still there: {[r.id for r in storage.list_jobs(limit=10)]}"
        )

    def reopen(self) -> Storage:
        """Close the storage and open a new object over the same data."""
        if self.storage is not None:
            self.storage.close()
            self.storage.close()  # close() must be idempotent
        self.storage = None
        self.storage = self.factory()
        return self.storage

    def close(self) -> None:
        if self.storage is not None:
            self.storage.close()
            self.storage = None


def _diff(record: JobRecord, expected: JobRecord) -> str:
    rows = [
        f"  {f.name}: got {getattr(record, f.name)!r}, expected {getattr(expected, f.name)!r}"
        for f in fields(JobRecord)
        if getattr(record, f.name) != getattr(expected, f.name)
    ]
    return f"job {expected.id!r} differs from the model:\n" + "\n".join(rows)


def expected_record(job: ModelJob, seq: int) -> JobRecord:
    """The record a backend must return for the model's ``job`` stored at ``seq``."""
    return JobRecord(
        id=job.id,
        seq=seq,
        worker=job.worker,
        payload=job.payload,
        state=job.state,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        run_at=job.run_at,
        enqueued_at=job.enqueued_at,
        errors=tuple(job.errors),
        lease_owner=job.lease_owner,
        lease_token=job.lease_token,
        lease_expires=job.lease_expires,
        error_count=job.error_count,
        priority=job.priority,
        meta=dict(job.meta),
        timeout=job.timeout,
        expires_at=job.expires_at,
        unique_key=job.unique_key,
        partition=job.partition,
    )


def check_record(model: Model, real_seq: dict[str, int], record: JobRecord) -> None:
    """``record`` equals the model's job, field by field, and keeps the seq it was
    first seen with (``real_seq`` remembers it)."""
    job = model.jobs.get(record.id)
    assert job is not None, f"the backend has job {record.id!r}, the model has none"
    check_types(record)
    seq = real_seq.setdefault(record.id, record.seq)
    assert record.seq == seq, f"job {record.id!r} changed its seq from {seq} to {record.seq}"
    expected = expected_record(job, seq)
    # errors may come back as any sequence, meta as any mapping; their values count.
    if replace(record, errors=tuple(record.errors), meta=dict(record.meta)) != expected:
        raise AssertionError(_diff(record, expected))
