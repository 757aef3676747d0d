"""The dialect interface of the SQL backend: what one database does its own way.

``SQLStorage`` speaks portable SQLAlchemy Core and runs every call through the
one transaction runner (``_runner``). A ``Dialect`` holds only what differs
between databases: the tables' options, the lock around schema creation, the
engines for single statements, enqueue and claim statements, which errors are
worth running again, wake-ups, and what to close. The methods here are the
portable default; ``_sqlite``, ``_postgres`` and ``_mysql`` each override what
their own database does differently, and nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    Table,
    and_,
    bindparam,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError

from exqueue.errors import ExqueueError
from exqueue.storage import (
    COMPLETE_MANY,
    DEAD,
    MULTI_PROCESS,
    PERSISTENT,
    PROTOCOL_2,
    RUNNING,
    TRANSACTIONAL_ENQUEUE,
    WAITING,
    JobRecord,
    NewJob,
)
from exqueue_sql._prepared import Prepared, driver_rows, mark, marks
from exqueue_sql._records import Damaged, dump_meta, parse_values
from exqueue_sql._schema import Tables, tables

if TYPE_CHECKING:
    from exqueue_sql._runner import Kept, Runner

INSERT_COLUMNS = (
    "id",
    "worker",
    "payload",
    "max_attempts",
    "run_at",
    "enqueued_at",
    "priority",
    "meta",
    "timeout",
    "expires_at",
    "unique_key",
    "unique_period",
    "partition_key",
)
#: The columns a job with every protocol-2 default needs: the rest take their
#: column defaults, so the common insert sends no more than version 1 did.
PLAIN_COLUMNS = INSERT_COLUMNS[:6]
_FRESH = (WAITING, 0, "[]")  # state, attempt and errors of a new job


class StorageTimeoutError(ExqueueError, TimeoutError):
    """The database server did not answer within the connect or statement timeout."""


class Timeouts(NamedTuple):
    """Seconds to wait for a connection (with its login) and for one statement; None: forever."""

    connect: float | None
    statement: float | None


class Lease(NamedTuple):
    """The claim a claimer asks for: who holds the jobs, with which token, until when."""

    owner: str
    token: str
    until: float

    def values(self, jobs: Table) -> dict[str, Any]:
        """The columns a claim sets on each job it takes."""
        return {
            "state": RUNNING,
            "attempt": jobs.c.attempt + 1,
            "lease_owner": self.owner,
            "lease_token": self.token,
            "lease_expires": self.until,
        }

    def apply(self, record: JobRecord | Damaged) -> JobRecord | Damaged:
        """The row as the claim's UPDATE left it, without reading it again."""
        if isinstance(record, Damaged):
            return record  # the storage buries it in the same call
        return replace(
            record,
            state=RUNNING,
            attempt=record.attempt + 1,
            lease_owner=self.owner,
            lease_token=self.token,
            lease_expires=self.until,
        )


class Failing(NamedTuple):
    """A held job's failure, built once: read its errors, then retry or bury it."""

    held_errors: Prepared
    retry: Prepared
    bury: Prepared

    @classmethod
    def build(cls, engine: Engine, jobs: Table) -> Failing:
        j = jobs.c
        held = and_(
            j.id == bindparam("id"), j.state == RUNNING, j.lease_token == bindparam("token")
        )
        recorded = (
            update(jobs)
            .where(held)
            .values(
                errors=bindparam("errors"),
                error_count=bindparam("count"),
                lease_owner=None,
                lease_token=None,
                lease_expires=None,
            )
        )
        return cls(
            Prepared(engine, select(j.errors, j.error_count).where(held).with_for_update()),
            Prepared(engine, recorded.values(state=WAITING, run_at=bindparam("run_at"))),
            Prepared(engine, recorded.values(state=DEAD)),
        )


class Dialect:
    """Portable SQL; a database's own module overrides what it does its own way."""

    #: Whether ``claim_many`` is one statement, run in autocommit mode where the
    #: dialect has a single-statement engine.
    claim_is_one_statement: ClassVar[bool] = False
    #: Whether every write transaction holds the whole database (SQLite), so
    #: unique key rows need not be added ahead of the transaction that locks them.
    serializes_writes: ClassVar[bool] = False
    #: Whether ``complete_marking`` deletes held jobs and leaves their completion
    #: markers in one statement (else the storage uses a transaction).
    marks_in_one_statement: ClassVar[bool] = False
    #: Whether ``finish_and_claim`` writes successes (with their markers) and a
    #: claim in one statement (else the storage runs both in a transaction).
    finishes_in_one_statement: ClassVar[bool] = False

    def __init__(self, engine: Engine, prefix: str, timeouts: Timeouts | None) -> None:
        self.engine = engine
        self.prefix = prefix
        #: None when the caller brought their own engine: its options are theirs.
        self.timeouts = timeouts
        self.tables = self.make_tables()
        self.jobs = self.tables.jobs
        #: Held around every use of the engine; only a database shared through one
        #: connection needs more than a no-op.
        self.lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        self.capabilities = frozenset(
            {TRANSACTIONAL_ENQUEUE, COMPLETE_MANY, PERSISTENT, MULTI_PROCESS} | PROTOCOL_2
        )
        self.insert_sql = _insert_sql(engine, self.jobs.name, INSERT_COLUMNS)
        self.plain_insert_sql = _insert_sql(engine, self.jobs.name, PLAIN_COLUMNS)
        #: The jobs table's name as SQL, and the driver's placeholder, for hand-written SQL.
        self.table = engine.dialect.identifier_preparer.quote(self.jobs.name)
        self.mark = mark(engine)
        # Per batch size: the claim's UPDATE and the completions' DELETE (see _prepared).
        self._leasing: dict[int, str] = {}
        self._deleting: dict[tuple[int, bool], str] = {}
        self.prepare()

    def prepare(self) -> None:
        """Build the hot paths' statements once (a dialect adds or replaces its own)."""
        j = self.jobs.c
        pick = (
            select(self.jobs)
            .where(runnable(self.jobs, bindparam("worker"), bindparam("now")))
            .order_by(j.priority, j.run_at, j.seq)
            .limit(bindparam("limit"))
            .with_for_update(skip_locked=True)
        )
        self._pick = Prepared(self.engine, self.claim_index(pick))
        self.failing = Failing.build(self.engine, self.jobs)

    def make_tables(self) -> Tables:
        return tables(self.prefix)

    @contextlib.contextmanager
    def schema_lock(self, conn: Connection) -> Iterator[None]:
        """A transaction on ``conn`` in which no other process creates or checks the tables."""
        with conn.begin():
            yield

    def single_engine(self, relaxed: bool) -> Engine | None:
        """The engine for a one-statement call without BEGIN/COMMIT; None: use a transaction.

        ``relaxed`` marks a transition whose loss in a crash only makes a job run
        again (see ``Runner.run``).
        """
        return None

    def kept(self, relaxed: bool) -> Kept | None:
        """Connections kept out of the pool for one-statement calls (see ``Kept``);
        None: each call checks one out of :meth:`single_engine`'s pool."""
        return None

    def begin(self, conn: Connection, relaxed: bool) -> None:
        """Called first in every transaction the runner opens."""

    def notify(self, conn: Connection) -> None:
        """Tell waiting workers, at commit, that a job may be runnable."""

    def transient(self, exc: DBAPIError) -> bool:
        """A deadlock, serialization failure or busy database: safe to run again."""
        return False

    def failed(self, exc: DBAPIError) -> None:
        """Called with each error the runner gives up on, before it is raised."""

    @staticmethod
    def timed_out(exc: DBAPIError) -> bool:
        """The error is a connect or statement timeout."""
        return False

    def unusable(self, create: bool) -> str | None:
        """Why the store cannot be opened, when that shows without connecting."""
        return None

    def enqueue(self, runner: Runner, jobs: Sequence[NewJob]) -> None:
        # A driver may split a multi-row executemany into several statements,
        # which must then share a transaction.
        runner.run(lambda conn: self.insert(conn, jobs), single=len(jobs) == 1)

    def insert(self, conn: Connection, jobs: Sequence[NewJob]) -> None:
        """Insert waiting jobs with hand-written SQL: enqueue is the producers' hot path."""
        sql, rows = self.insert_statement(jobs)
        # executemany inserts in list order, so seq follows the batch order.
        conn.exec_driver_sql(sql, rows[0] if len(rows) == 1 else rows)

    def insert_statement(self, jobs: Sequence[NewJob]) -> tuple[str, list[tuple[Any, ...]]]:
        """The INSERT for ``jobs`` and its parameters: the short one when every job is plain."""
        if all_plain(jobs):
            return self.plain_insert_sql, [
                (j.id, j.worker, j.payload, j.max_attempts, j.run_at, j.enqueued_at, *_FRESH)
                for j in jobs
            ]
        return self.insert_sql, insert_rows(jobs)

    def add_unique_rows(self, conn: Connection, keys: Sequence[tuple[str, str]]) -> None:
        """Insert the ``(worker, unique_key)`` rows of ``keys`` that are missing.

        Each database says "insert unless there" its own way; an existing row is
        left alone and not locked (the caller locks it with SELECT ... FOR UPDATE).
        The portable form reads first; the database modules use their upsert.
        """
        u = self.tables.unique
        for worker, key in keys:
            there = select(u.c.worker).where(u.c.worker == worker, u.c.unique_key == key)
            if conn.execute(there).first() is None:
                conn.execute(u.insert().values(worker=worker, unique_key=key))

    def claim_many(
        self, conn: Connection, worker: str, limit: int, now: float, lease: Lease
    ) -> list[JobRecord | Damaged]:
        """Lease up to ``limit`` runnable jobs of ``worker``, in ``(priority, run_at, seq)`` order.

        A damaged row comes back as :class:`Damaged`, for the storage to bury.
        No UPDATE ... RETURNING here: the locked rows are read whole and the lease
        applied to them in Python, three round trips in all.
        """
        pick = self._pick
        found = pick.rows(conn, worker=worker, now=now, limit=limit)
        names = pick.names or ()
        picked = [parse_values(names, r) for r in found]
        if not picked:
            return []
        sql = self._leasing.get(len(picked))
        if sql is None:
            m = self.mark
            sql = self._leasing[len(picked)] = (
                f"UPDATE {self.table} SET state = '{RUNNING}', attempt = attempt + 1, "
                f"lease_owner = {m}, lease_token = {m}, lease_expires = {m} "
                f"WHERE seq IN ({marks(m, len(picked))})"
            )
        conn.exec_driver_sql(sql, (*lease, *(r.seq for r in picked)))
        return [lease.apply(r) for r in picked]

    def complete_marking(
        self, conn: Connection, pairs: Sequence[tuple[str, str]], now: float
    ) -> list[str]:
        """Delete the running jobs of ``pairs`` (id, token), leaving completion markers.

        Only where ``marks_in_one_statement``; returns the ids deleted.
        """
        raise NotImplementedError

    def complete_plain(
        self, conn: Connection, pairs: Sequence[tuple[str, str]], unmarked: bool
    ) -> list[str]:
        """Delete the running jobs of ``pairs`` (id, token); the ids deleted.

        ``unmarked``: only those whose completion leaves no marker (no unique
        period); the storage deals with the others in a transaction.
        """
        sql = self._deleting.get((len(pairs), unmarked))
        if sql is None:
            m = self.mark
            held = (
                f"id = {m} AND lease_token = {m}"
                if len(pairs) == 1
                else f"(id, lease_token) IN ({marks(m, len(pairs), 2)})"
            )
            held += f" AND state = '{RUNNING}'"
            if unmarked:
                held += " AND unique_period IS NULL"
            sql = self._deleting[len(pairs), unmarked] = (
                f"DELETE FROM {self.table} WHERE {held} RETURNING id"
                if self.engine.dialect.delete_returning
                else f"SELECT id FROM {self.table} WHERE {held} FOR UPDATE"
            )
        values = tuple(v for pair in pairs for v in pair)
        found = [r[0] for r in driver_rows(conn, sql, values)[0]]
        if found and not self.engine.dialect.delete_returning:
            conn.exec_driver_sql(
                f"DELETE FROM {self.table} WHERE id IN ({marks(self.mark, len(found))})",
                tuple(found),
            )
        return found

    def finish_and_claim(
        self,
        conn: Connection,
        pairs: Sequence[tuple[str, str]],
        now: float,
        worker: str,
        limit: int,
        lease: Lease,
    ) -> tuple[list[str], list[JobRecord | Damaged]]:
        """``complete_marking`` then ``claim_many`` in one statement: the ids deleted
        and the rows claimed. Only where ``finishes_in_one_statement``."""
        raise NotImplementedError

    def claim_index(self, pick: Select[Any]) -> Select[Any]:
        """``pick`` (the claim's SELECT) told to read the claim index, where a planner needs it."""
        return pick

    def wait_for_jobs(self, timeout: float) -> bool:
        raise NotImplementedError("wait_for_jobs needs PostgreSQL (LISTEN/NOTIFY)")

    def server_time(self, conn: Connection) -> float:
        """The database server's clock, epoch seconds (``SERVER_CLOCK`` dialects only)."""
        raise NotImplementedError("this database has no clock of its own to compare with")

    def close(self) -> None:
        """Release what the dialect holds besides the main engine."""


def runnable(jobs: Table, worker: Any, now: Any) -> ColumnElement[bool]:
    """Waiting jobs of ``worker`` due by ``now``, not expired, of a type not paused
    (values or ``bindparam``)."""
    j = jobs.c
    return and_(
        j.worker == worker,
        j.state == WAITING,
        j.run_at <= now,
        or_(j.expires_at.is_(None), j.expires_at > now),
        not_paused(jobs, worker),
    )


def not_paused(jobs: Table, worker: Any) -> ColumnElement[bool]:
    """``worker`` is not paused (``{prefix}worker_control``, see ``_limits``): checked
    inside every claim's own statement, so a pause holds on every node at once."""
    control = jobs.metadata.tables[jobs.name[: -len("jobs")] + "worker_control"]
    c = control.c
    return ~select(c.worker).where(c.worker == worker, c.paused != 0).exists()


def column_values(job: NewJob) -> tuple[Any, ...]:
    """The values of ``INSERT_COLUMNS`` for ``job``."""
    unique = job.unique
    return (
        job.id,
        job.worker,
        job.payload,
        job.max_attempts,
        job.run_at,
        job.enqueued_at,
        job.priority,
        dump_meta(job.meta),
        job.timeout,
        job.expires_at,
        None if unique is None else unique.key,
        None if unique is None else unique.period,
        job.partition,
    )


def all_plain(jobs: Sequence[NewJob]) -> bool:
    """Whether every job has each protocol-2 field at its default (stored by column defaults).

    One generator, no call per job: a batch enqueue asks it of every job.
    """
    return all(
        j.priority == 0
        and not j.meta
        and j.timeout is None
        and j.expires_at is None
        and j.unique is None
        and j.partition is None
        and j.dead_error is None
        for j in jobs
    )


def insert_rows(jobs: Sequence[NewJob]) -> list[tuple[Any, ...]]:
    """Parameters for ``Dialect.insert_sql``, one tuple per job."""
    return [column_values(j) + _FRESH for j in jobs]


def _insert_sql(engine: Engine, table: str, given: Sequence[str]) -> str:
    """INSERT of one waiting job in the driver's own placeholder style.

    Placeholders only, constants too, so a driver that turns an executemany into
    one multi-row INSERT (PyMySQL does, only when VALUES holds nothing else) can.
    """
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    name = engine.dialect.identifier_preparer.quote(table)
    columns = (*given, "state", "attempt", "errors")
    return f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
