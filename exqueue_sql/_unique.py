"""Unique jobs on SQL: the key rows that serialize enqueues, and completion markers.

Every ``(worker, unique_key)`` in use has a row in ``{prefix}unique``. A unique
enqueue locks the rows of its keys (``SELECT ... FOR UPDATE``, in one sorted
order so two batches never wait on each other in a cycle), then looks for a
holder: a stored job of that worker with the key in one of the states the job
names (the ``(worker, unique_key)`` index), or the row's completion marker.
Only then does it insert, in the same transaction, so racing enqueuers of one
key run one after the other and leave one job. On PostgreSQL (READ COMMITTED)
each statement sees what committed before it; on MariaDB the first plain read
comes after the locks, so its snapshot too holds every earlier enqueue. On
SQLite every write transaction holds the database's write lock from BEGIN.

A completed job that was enqueued with a unique period leaves its completion on
the key row, in the transaction that deletes it (``completed_at``, and
``hold_until = completed_at + period``, the latest of all completions). The
rows whose hold has passed, and key rows without a completion, are removed by
:func:`prune` (``SQLStorage.expire`` calls it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Row, Table, delete, or_, select, update

from exqueue.storage import WAITING, NewJob
from exqueue_sql._dialect import Dialect

Key = tuple[str, str]  # (worker, unique_key)


def keys_of(jobs: Iterable[NewJob]) -> list[Key]:
    """The distinct keys of the unique jobs in ``jobs``, in lock order."""
    return sorted({(j.worker, j.unique.key) for j in jobs if j.unique is not None})


def lock(conn: Connection, dialect: Dialect, keys: Sequence[Key]) -> dict[Key, Row[Any]]:
    """Lock the key rows of ``keys`` (sorted) until commit, adding those missing."""
    u = dialect.tables.unique
    found: dict[Key, Row[Any]] = {}
    for worker, key in keys:
        query = select(u).where(u.c.worker == worker, u.c.unique_key == key).with_for_update()
        row = conn.execute(query).first()
        if row is None:
            # Not added before the transaction, or pruned since.
            dialect.add_unique_rows(conn, [(worker, key)])
            row = conn.execute(query).first()
            if row is None:  # pragma: no cover - the insert above always leaves it
                raise RuntimeError(f"unique key row {worker!r}/{key!r} vanished")
        found[(worker, key)] = row
    return found


def enqueue(conn: Connection, dialect: Dialect, jobs: Sequence[NewJob]) -> list[str]:
    """Insert the jobs of ``jobs`` that no other job holds; the holder id of each.

    Runs in the caller's transaction; the key rows were added beforehand where
    that is cheaper outside it (``SQLStorage.enqueue``).
    """
    table = dialect.jobs
    j = table.c
    ids = [job.id for job in jobs]
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        if conn.execute(select(j.id).where(j.id.in_(chunk)).limit(1)).first() is not None:
            # Even a duplicate that stores nothing must not pass a used id.
            raise ValueError("duplicate job id in enqueue batch")
    markers = lock(conn, dialect, keys_of(jobs))
    in_batch: dict[Key, str] = {}
    holders: list[str] = []
    stored: list[NewJob] = []
    for job in jobs:
        unique = job.unique
        if unique is None:
            holders.append(job.id)
            stored.append(job)
            continue
        key = (job.worker, unique.key)
        holder = _live_holder(conn, table, key, {WAITING, *unique.states})
        if holder is None:
            holder = in_batch.get(key)
        if holder is None and unique.period is not None:
            marker = markers[key]
            done = marker.completed_at
            if done is not None and done > job.enqueued_at - unique.period:
                holder = marker.job_id
        if holder is None:
            holder = job.id
            in_batch[key] = job.id
            stored.append(job)
        holders.append(holder)
    if stored:
        dialect.insert(conn, stored)
    return holders


def _live_holder(conn: Connection, table: Table, key: Key, states: set[str]) -> str | None:
    """The oldest stored job of the key's worker with the key, in one of ``states``."""
    j = table.c
    found: str | None = conn.scalar(
        select(j.id)
        .where(j.worker == key[0], j.unique_key == key[1], j.state.in_(sorted(states)))
        .order_by(j.seq)
        .limit(1)
    )
    return found


def hold(
    conn: Connection, dialect: Dialect, done: Sequence[tuple[str, str, str, float]], now: float
) -> None:
    """Record completions at ``now``: ``(worker, unique_key, job_id, period)`` each.

    Called in the transaction that deletes those jobs. A key row keeps its
    latest completion and the latest time any completion holds it until.
    """
    latest: dict[Key, tuple[str, float]] = {}
    for worker, key, job_id, period in done:
        until = latest.get((worker, key), (job_id, now + period))[1]
        latest[(worker, key)] = (job_id, max(until, now + period))
    u = dialect.tables.unique
    rows = lock(conn, dialect, sorted(latest))
    for (worker, key), (job_id, until) in latest.items():
        row = rows[(worker, key)]
        conn.execute(
            update(u)
            .where(u.c.worker == worker, u.c.unique_key == key)
            .values(
                job_id=job_id,
                completed_at=max(now, row.completed_at or now),
                hold_until=max(until, row.hold_until or until),
            )
        )


def prune(conn: Connection, dialect: Dialect, now: float) -> int:
    """Remove key rows no completion holds any more at ``now``; how many."""
    u = dialect.tables.unique
    stmt = delete(u).where(or_(u.c.hold_until.is_(None), u.c.hold_until <= now))
    return int(conn.execute(stmt).rowcount or 0)
