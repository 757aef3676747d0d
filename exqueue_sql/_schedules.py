"""SQLStorage's schedule states (capability ``SCHEDULES``): the ``{prefix}schedules`` table.

One row per schedule: its name, the last tick recorded and whether it is paused.
``fire`` locks the schedule's row (``SELECT ... FOR UPDATE``; SQLite's
``BEGIN IMMEDIATE`` write lock), compares the tick, inserts the job with the
dialect's own insert and moves the tick, in one durable transaction: racing
nodes queue on the row lock and the later ones find the tick recorded. A
schedule's row is created, on its first tick or pause, in a transaction of its
own, so the locking transaction always finds it.

The table joins the jobs table's ``MetaData`` (:func:`schedules_table`, called
by ``_schema.tables``), so ``create_all``/``drop_all`` and Alembic's
``exqueue_sql.metadata`` include it; a store made before it existed gets it at
open (:func:`create_schedules_table`, under the schema lock).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Double,
    MetaData,
    String,
    Table,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from exqueue.storage import NewJob, ScheduleState

if TYPE_CHECKING:
    from exqueue_sql._dialect import Dialect
    from exqueue_sql._runner import Runner


def schedules_table(prefix: str, metadata: MetaData, options: dict[str, Any]) -> Table:
    """The schedules table of ``prefix``, added to ``metadata`` (the jobs table's)."""
    return Table(
        f"{prefix}schedules",
        metadata,
        Column("name", String(255), primary_key=True),
        Column("last_tick", Double),
        Column("paused", Boolean, nullable=False, server_default="0"),
        **options,
    )


def create_schedules_table(conn: Connection, metadata: MetaData, prefix: str) -> None:
    """Create the schedules table in a store made before it existed (a no-op otherwise)."""
    metadata.tables[f"{prefix}schedules"].create(conn, checkfirst=True)


class _Missing(Exception):
    """The schedule has no row yet: create it, then fire again."""


class SQLSchedules:
    """The schedule calls of ``SQLStorage`` (a base class of it)."""

    prefix: str
    _jobs: Table
    _dialect: Dialect
    _runner: Runner

    @property
    def _schedules(self) -> Table:
        return self._jobs.metadata.tables[f"{self.prefix}schedules"]

    def fire(self, schedule: str, tick: float, job: NewJob) -> bool:
        table = self._schedules
        c = table.c

        def work(conn: Connection) -> bool:
            row = conn.execute(
                select(c.last_tick, c.paused).where(c.name == schedule).with_for_update()
            ).first()
            if row is None:
                raise _Missing
            if row.last_tick is not None and tick <= row.last_tick:
                return False
            conn.execute(update(table).where(c.name == schedule).values(last_tick=tick))
            if row.paused:
                return False
            self._dialect.insert(conn, [job])
            self._dialect.notify(conn)
            return True

        for _ in range(2):
            try:
                return self._runner.run(work)
            except _Missing:
                self._create_row(schedule)
            except IntegrityError as exc:
                raise ValueError(
                    f"duplicate job id {job.id!r}; nothing was stored and no tick recorded"
                ) from exc
        raise AssertionError("the schedule's row was created, yet not found")

    def schedules(self) -> list[ScheduleState]:
        c = self._schedules.c
        stmt = select(c.name, c.last_tick, c.paused).order_by(c.name)
        rows = self._runner.run(lambda conn: conn.execute(stmt).all(), read=True)
        return [ScheduleState(r.name, r.last_tick, bool(r.paused)) for r in rows]

    def pause_schedule(self, schedule: str, paused: bool) -> None:
        table = self._schedules
        stmt = update(table).where(table.c.name == schedule).values(paused=bool(paused))
        for _ in range(2):
            if self._runner.run(lambda conn: conn.execute(stmt).rowcount) == 1:
                return
            self._create_row(schedule)

    def _create_row(self, schedule: str) -> None:
        table = self._schedules
        try:
            self._runner.run(
                lambda conn: conn.execute(
                    insert(table).values(name=schedule, last_tick=None, paused=False)
                )
            )
        except IntegrityError:
            pass  # another node created it first
