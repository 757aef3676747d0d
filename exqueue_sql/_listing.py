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
from exqueue.storage_scan import JobScan, ScannedJobs, finish
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
    upto: int | None = None,
) -> list[JobRecord]:
    if limit <= 0:
        return []
    j = jobs.c
    stmt = select(jobs).limit(limit)
    if upto is not None:
        stmt = stmt.where(j.seq <= upto)
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


def scan_jobs(runner: Runner, jobs: Table, scan: JobScan) -> ScannedJobs:
    """A bounded ``list_jobs`` (see :mod:`exqueue.storage_scan`): first the ``seq`` of
    the ``budget``-th candidate, found on the (state, seq) or seq index alone, then
    the tag's scan up to it: at most ``budget`` rows are read however rare the tag."""
    j = jobs.c
    # The budget-th candidate and the one after it: with no one after it, the call
    # reads to the end and says so (no empty last call).
    probe = select(j.seq).limit(2).offset(scan.budget - 1)
    if scan.state is not None and scan.worker is None and scan.after_seq is None:
        # As in list_jobs: the range keeps PostgreSQL on the (state, seq) index.
        probe = probe.where(j.state >= scan.state, j.state <= scan.state)
        probe = probe.order_by(j.state, j.seq)
    else:
        probe = probe.order_by(j.seq)
        if scan.state is not None:
            probe = probe.where(j.state == scan.state)
    if scan.worker is not None:
        probe = probe.where(j.worker == scan.worker)
    if scan.after_seq is not None:
        probe = probe.where(j.seq > scan.after_seq)
    rows = runner.run(functools.partial(_all, probe), read=True)
    bound: int | None = int(rows[0].seq) if len(rows) == 2 else None
    # list_jobs reads on until ``limit`` match or the rows up to the bound run out.
    found = list_jobs(
        runner,
        jobs,
        state=scan.state,
        worker=scan.worker,
        limit=scan.limit,
        after_seq=scan.after_seq,
        tag=scan.tag,
        upto=bound,
    )
    return finish(found, scan.limit, bound)


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
