"""SQLStorage's cancellation and snooze (capabilities ``CANCEL`` and ``SNOOZE``).

The ``{prefix}job_control`` table holds, per job that was ever cancelled while
running or snoozed, the lease token of the attempt a cancel marked
(``cancel_token``: a mark dies with its attempt, since a new claim has a new
token) and the job's snooze count. Every transition locks the job's row first,
so a cancel and a snooze (or a claim) of the same job never interleave. Rows of
jobs that are gone are pruned by the next snooze.

The table joins the jobs table's ``MetaData`` (:func:`control_table`, called by
``_schema.tables``); a store made before it existed gets it at open.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    delete,
    insert,
    select,
    update,
)

from exqueue.storage import (
    CANCELLED,
    DEAD,
    RUNNING,
    WAITING,
    CancelRequest,
    CancelResult,
    DeleteResult,
    SnoozeRequest,
    SnoozeResult,
)
from exqueue_sql._records import read, with_errors

if TYPE_CHECKING:
    from exqueue_sql._dialect import Dialect
    from exqueue_sql._runner import Runner

_UNLEASED: dict[str, Any] = {"lease_owner": None, "lease_token": None, "lease_expires": None}


def control_table(prefix: str, metadata: MetaData, options: dict[str, Any]) -> Table:
    """The job control table of ``prefix``, added to ``metadata`` (the jobs table's)."""
    return Table(
        f"{prefix}job_control",
        metadata,
        Column("job_id", String(255), primary_key=True),
        Column("cancel_token", String(255)),
        Column("snoozes", Integer, nullable=False, server_default="0"),
        **options,
    )


def create_control_table(conn: Connection, metadata: MetaData, prefix: str) -> None:
    """Create the control table in a store made before it existed (a no-op otherwise)."""
    metadata.tables[f"{prefix}job_control"].create(conn, checkfirst=True)


class SQLControl:
    """The cancel and snooze calls of ``SQLStorage`` (a base class of it)."""

    prefix: str
    _jobs: Table
    _dialect: Dialect
    _runner: Runner

    def delete(self, job_id: str) -> DeleteResult:
        raise NotImplementedError

    @property
    def _control(self) -> Table:
        return self._jobs.metadata.tables[f"{self.prefix}job_control"]

    def _set_control(self, conn: Connection, job_id: str, **values: Any) -> None:
        table = self._control
        if conn.execute(update(table).where(table.c.job_id == job_id).values(**values)).rowcount:
            return
        conn.execute(insert(table).values(job_id=job_id, **values))

    def cancel(self, request: CancelRequest) -> CancelResult:
        if request.delete:
            outcome = self.delete(request.job_id)
            if outcome != "running":
                return "missing" if outcome == "missing" else "deleted"
        j = self._jobs.c
        job_id = request.job_id

        def work(conn: Connection) -> CancelResult:
            row = conn.execute(select(self._jobs).where(j.id == job_id).with_for_update()).first()
            if row is None:
                return "missing"
            state = row._mapping["state"]
            if state == RUNNING:
                self._set_control(conn, job_id, cancel_token=row._mapping["lease_token"])
                return "requested"
            if state == DEAD:
                return "finished"
            fields, bad = read(row._mapping)
            errors, count = with_errors(fields, bad, CANCELLED)
            conn.execute(
                update(self._jobs)
                .where(and_(j.id == job_id, j.state == WAITING))
                .values(state=DEAD, errors=errors, error_count=count, **_UNLEASED)
            )
            return "cancelled"

        return self._runner.run(work)

    def cancel_requested(self, token: str, job_ids: Sequence[str]) -> list[str]:
        j, c = self._jobs.c, self._control.c
        wanted = list(dict.fromkeys(job_ids))
        if not wanted:
            return []
        stmt = (
            select(j.id)
            .join_from(self._jobs, self._control, c.job_id == j.id)
            .where(
                and_(
                    j.id.in_(wanted),
                    j.state == RUNNING,
                    j.lease_token == token,
                    c.cancel_token == token,
                )
            )
        )
        found = set(self._runner.run(lambda conn: list(conn.scalars(stmt)), read=True))
        return [job_id for job_id in wanted if job_id in found]

    def snooze(self, request: SnoozeRequest) -> SnoozeResult:
        j, c = self._jobs.c, self._control.c
        held = and_(j.id == request.job_id, j.state == RUNNING, j.lease_token == request.token)

        def work(conn: Connection) -> SnoozeResult:
            if conn.execute(select(j.id).where(held).with_for_update()).first() is None:
                return "lost"
            count = conn.scalar(select(c.snoozes).where(c.job_id == request.job_id)) or 0
            if count >= request.max_snoozes:
                return "capped"
            conn.execute(
                update(self._jobs)
                .where(held)
                .values(state=WAITING, attempt=j.attempt - 1, run_at=request.run_at, **_UNLEASED)
            )
            self._set_control(conn, request.job_id, snoozes=count + 1, cancel_token=None)
            self._dialect.notify(conn)
            return "snoozed"

        outcome = self._runner.run(work)
        if outcome == "snoozed":
            self._runner.run(self._prune, relaxed=True)
        return outcome

    def _prune(self, conn: Connection) -> None:
        """Drop control rows of jobs that are gone (a few per call)."""
        c, j = self._control.c, self._jobs.c
        orphans = list(
            conn.scalars(
                select(c.job_id).where(~select(j.id).where(j.id == c.job_id).exists()).limit(100)
            )
        )
        if orphans:
            conn.execute(delete(self._control).where(c.job_id.in_(orphans)))

    def snoozes(self, job_id: str) -> int:
        c, j = self._control.c, self._jobs.c
        stmt = (
            select(c.snoozes)
            .join_from(self._control, self._jobs, c.job_id == j.id)
            .where(c.job_id == job_id)
        )
        return int(self._runner.run(lambda conn: conn.scalar(stmt), read=True) or 0)
