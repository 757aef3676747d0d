"""One backend location shared by every example of a state-machine run, and the clock.

Opening a fresh SQL schema or Redis namespace per example would dominate the run
time, so :class:`StorageSession` keeps one storage open and empties it through
its own ``recover`` and ``delete`` before each example.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields

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
