"""Unique jobs on SQL: the key rows that serialize enqueues, and completion markers.

Every ``(worker, unique_key)`` in use has a row in ``{prefix}unique``. A unique
enqueue locks the rows of its keys (``SELECT ... FOR UPDATE``, in one sorted
order so two batches never wait on each other in a cycle), then looks for a
holder: a stored job of that worker with the key in one of the states the job
names (the ``(worker, unique_key)`` index), or the row's completion marker.
Only then does it insert, in the same transaction, so racing enqueuers of one
key run one after the other and leave one job. On PostgreSQL and MariaDB
(READ COMMITTED, as exqueue opens them) each statement after the locks sees
every enqueue that committed before. On SQLite every write transaction holds
the database's write lock from BEGIN.

A completed job that was enqueued with a unique period leaves a completion
marker in ``{prefix}unique_done``, in the same atomic step that deletes it (on
PostgreSQL one statement, ``_postgres``): ``hold_until = completed_at + period``
(its own period). Markers whose
hold has passed, and the key rows (locks only), are removed by :func:`prune`
(``SQLStorage.expire`` calls it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, delete, insert, select

from exqueue.storage import WAITING, NewJob
from exqueue_sql._dialect import Dialect

Key = tuple[str, str]  # (worker, unique_key)


def keys_of(jobs: Iterable[NewJob]) -> list[Key]:
    """The distinct keys of the unique jobs in ``jobs``, in lock order."""
    return sorted({(j.worker, j.unique.key) for j in jobs if j.unique is not None})


def lock(conn: Connection, dialect: Dialect, keys: Sequence[Key]) -> None:
    """Lock the key rows of ``keys`` (sorted) until commit, adding those missing."""
    u = dialect.tables.unique
    for worker, key in keys:
        query = select(u.c.worker).where(u.c.worker == worker, u.c.unique_key == key)
        if conn.execute(query.with_for_update()).first() is None:
            # Not added before the transaction, or pruned since.
            dialect.add_unique_rows(conn, [(worker, key)])
            conn.execute(query.with_for_update()).first()


def enqueue(conn: Connection, dialect: Dialect, jobs: Sequence[NewJob]) -> list[str]:
    """Insert the jobs of ``jobs`` that no other job holds; the holder id of each.

    Runs in the caller's transaction; the key rows were added beforehand where
    that is cheaper outside it (``SQLStorage.enqueue``). Holders are named as
    the memory backend names them: the oldest stored job in the states, then
    (an earlier job of the batch being one) the oldest completion still holding.
    """
    j = dialect.jobs.c
    ids = [job.id for job in jobs]
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        if conn.execute(select(j.id).where(j.id.in_(chunk)).limit(1)).first() is not None:
            # Even a duplicate that stores nothing must not pass a used id.
            raise ValueError("duplicate job id in enqueue batch")
    lock(conn, dialect, keys_of(jobs))
    in_batch: dict[Key, str] = {}
    holders: list[str] = []
    stored: list[NewJob] = []
    for job in jobs:
        unique = job.unique
        holder: str | None = None
        if unique is not None:
            key = (job.worker, unique.key)
            holder = _live_holder(conn, dialect, key, {WAITING, *unique.states})
            if holder is None:
                holder = in_batch.get(key)
            if holder is None and unique.period is not None:
                holder = _completed_holder(conn, dialect, key, job.enqueued_at)
            if holder is None:
                in_batch[key] = job.id
        if holder is None:
            holder = job.id
            stored.append(job)
        holders.append(holder)
    if stored:
        dialect.insert(conn, stored)
    return holders


def _live_holder(conn: Connection, dialect: Dialect, key: Key, states: set[str]) -> str | None:
    """The oldest stored job of the key's worker with the key, in one of ``states``."""
    j = dialect.jobs.c
    found: str | None = conn.scalar(
        select(j.id)
        .where(j.worker == key[0], j.unique_key == key[1], j.state.in_(sorted(states)))
        .order_by(j.seq)
        .limit(1)
    )
    return found


def _completed_holder(conn: Connection, dialect: Dialect, key: Key, at: float) -> str | None:
    """The oldest completed job of the key still holding it at ``at``."""
    d = dialect.tables.done.c
    found: str | None = conn.scalar(
        select(d.job_id)
        .where(d.worker == key[0], d.unique_key == key[1], d.hold_until > at)
        .order_by(d.seq)
        .limit(1)
    )
    return found


class Completed(NamedTuple):
    """A completed job that holds its unique key for ``period`` seconds."""

    worker: str
    unique_key: str
    seq: int
    job_id: str
    period: float


def hold(conn: Connection, dialect: Dialect, done: Sequence[Completed], now: float) -> None:
    """Leave a completion marker for each of ``done``, completed at ``now``.

    Called in the transaction that deletes those jobs. No key lock is needed:
    an enqueuer reads the jobs, then the markers, each read seeing what has
    committed, and the deletion and its marker commit together, so it sees the
    job or the marker (or both), never neither.
    """
    if not done:
        return
    conn.execute(
        insert(dialect.tables.done),
        [
            {
                "worker": c.worker,
                "unique_key": c.unique_key,
                "seq": c.seq,
                "job_id": c.job_id,
                "hold_until": now + c.period,
            }
            for c in done
        ],
    )


def prune(conn: Connection, dialect: Dialect, now: float) -> None:
    """Remove the completion markers that no longer hold at ``now``, and the key rows.

    A key row is only a lock: one removed while in use is waited for, and the
    next enqueue of its key adds it again.
    """
    d = dialect.tables.done
    conn.execute(delete(d).where(d.c.hold_until <= now))
    conn.execute(delete(dialect.tables.unique))


def completions(rows: Sequence[Any]) -> list[Completed]:
    """The markers completed job ``rows`` leave: those enqueued with a unique period."""
    return [
        Completed(r.worker, r.unique_key, r.seq, r.id, r.unique_period)
        for r in rows
        if r.unique_key is not None and r.unique_period is not None
    ]
