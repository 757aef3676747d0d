"""Expiry on SQL: waiting jobs past ``expires_at`` become dead with the reason.

Claims never take such a job (``_dialect.runnable``); ``expire`` finds them with
a range scan of the ``(state, expires_at)`` index and records :data:`EXPIRED`
as a burial does (``attempt`` left as it was).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table, bindparam, select, update

from exqueue.storage import DEAD, EXPIRED, WAITING
from exqueue_sql._records import Damaged, damage, read, with_errors


def expire(
    conn: Connection, jobs: Table, now: float, limit: int
) -> tuple[list[str], list[Damaged]]:
    """Bury up to ``limit`` expired waiting jobs: their ids (oldest first, with the
    damaged ones), and the damaged rows for the caller to bury as such."""
    j = jobs.c
    rows = conn.execute(
        select(j.seq, j.id, j.errors, j.error_count)
        .where(j.state == WAITING, j.expires_at <= now)
        .order_by(j.seq)
        .limit(limit)
        .with_for_update(skip_locked=True)  # a row locked now is being claimed or deleted
    ).all()
    damaged: list[Damaged] = []
    params: list[dict[str, Any]] = []
    for row in rows:
        fields, bad = read(row._mapping)
        if bad:
            damaged.append(damage(row._mapping, fields, bad))
        else:
            errors, count = with_errors(fields, bad, EXPIRED)
            params.append({"b_seq": row.seq, "b_errors": errors, "b_count": count})
    if params:
        stmt = (
            update(jobs)
            .where(j.seq == bindparam("b_seq"))
            .values(state=DEAD, errors=bindparam("b_errors"), error_count=bindparam("b_count"))
        )
        conn.execute(stmt, params)
    return [row.id for row in rows], damaged
