"""Reading many jobs: ``list_jobs`` (with its tag filter) and ``counts``.

The tag filter is a ``LIKE`` on the stored JSON text of ``meta`` for the
entry's exact encoding (``meta_needle``: meta is written sorted, compact and
ASCII-only), the same statement on every database, with no JSON functions and
no index: a scan of the rows the other filters leave, in ``seq`` order. Each
candidate is then checked on its parsed ``meta``, so text that merely contains
the entry (inside another value, or in another case on SQLite) never matches;
pages are read until ``limit`` jobs match or the rows run out.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table, case, func, select

from exqueue.storage import DEAD, RUNNING, WAITING, Counts, JobRecord, JobState
from exqueue_sql._records import meta_needle, readable
from exqueue_sql._runner import Runner


def list_jobs(
    runner: Runner,
    jobs: Table,
    *,
    state: JobState | None,
    worker: str | None,
    limit: int,
    after_seq: int | None,
    tag: tuple[str, str] | None,
) -> list[JobRecord]:
    if limit <= 0:
        return []
    j = jobs.c
    stmt = select(jobs).limit(limit)
    if state is not None and worker is None and after_seq is None and tag is None:
        # The first page by state alone, as a range sorted by (state, seq): the same
        # rows in the same order, but only the (state, seq) index gives that order,
        # so PostgreSQL reads one page of it. With ``state = x ORDER BY seq`` it
        # walks the seq key instead, past every row of other states (0.2 s past
        # 100,000 dead jobs to the first waiting one). Later pages keep the
        # equality, which every database seeks to ``(state, after_seq)``.
        stmt = stmt.where(j.state >= state, j.state <= state).order_by(j.state, j.seq)
    else:
        stmt = stmt.order_by(j.seq)
        if state is not None:
            stmt = stmt.where(j.state == state)
    if worker is not None:
        stmt = stmt.where(j.worker == worker)
    if tag is None:
        if after_seq is not None:
            stmt = stmt.where(j.seq > after_seq)
        return [readable(r) for r in runner.run(functools.partial(_all, stmt), read=True)]
    key, value = tag
    stmt = stmt.where(j.meta.contains(meta_needle(key, value), autoescape=True))
    found: list[JobRecord] = []
    cursor = after_seq
    while len(found) < limit:
        page = stmt if cursor is None else stmt.where(j.seq > cursor)
        rows = runner.run(functools.partial(_all, page), read=True)
        for row in rows:
            record = readable(row)
            if record.meta.get(key) == value and len(found) < limit:
                found.append(record)
        if len(rows) < limit:
            break
        cursor = rows[-1].seq
    return found


def counts(runner: Runner, jobs: Table, now: float) -> dict[str, Counts]:
    j = jobs.c
    due = func.sum(case((j.run_at <= now, 1), else_=0))
    stmt = select(j.worker, j.state, func.count(), due).group_by(j.worker, j.state)
    tally: dict[str, dict[str, int]] = {}
    for worker, state, total, runnable in runner.run(functools.partial(_all, stmt), read=True):
        row = tally.setdefault(worker, {})
        if state == WAITING:
            row["waiting"] = int(runnable)
            row["scheduled"] = int(total) - int(runnable)
        else:
            # An unknown state (a damaged row) is listed as dead, so counted so.
            key = state if state == RUNNING else DEAD
            row[key] = row.get(key, 0) + int(total)
    return {worker: Counts(**row) for worker, row in tally.items()}


def _all(stmt: Any, conn: Connection) -> Sequence[Any]:
    return conn.execute(stmt).all()
