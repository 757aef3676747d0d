"""PostgreSQL (psycopg 3): one-statement enqueue and claim, relaxed commits, LISTEN/NOTIFY.

Single statements run in autocommit mode (no BEGIN/COMMIT round trips); claims,
successes and lease extensions commit without waiting for the WAL flush;
advisory locks keep each worker type's seqs committing in order; enqueue and
the other transitions that make a job runnable send ``NOTIFY``, which
``wait_for_jobs`` hears on one shared ``LISTEN`` connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
import time
from collections.abc import Iterator, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ARRAY,
    Connection,
    Engine,
    Text,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError

from exqueue.storage import RUNNING, SERVER_CLOCK, WAITING, WAKEUP, JobRecord, NewJob
from exqueue_sql._dialect import (
    INSERT_COLUMNS,
    PLAIN_COLUMNS,
    Dialect,
    Lease,
    Timeouts,
    all_plain,
    column_values,
    runnable,
)
from exqueue_sql._prepared import Prepared
from exqueue_sql._records import Damaged, parse_values
from exqueue_sql._runner import Kept, Runner
from exqueue_sql._urls import ping_when_idle

if TYPE_CHECKING:
    import psycopg

_LISTEN_SLICE = 0.5  # a waiting listener re-checks close() at least this often
_RETRY_SQLSTATES = ("40001", "40P01")  # serialization failure, deadlock
_QUERY_CANCELED = "57014"  # what statement_timeout raises


class PostgresDialect(Dialect):
    claim_is_one_statement = True
    marks_in_one_statement = True
    finishes_in_one_statement = True

    def __init__(self, engine: Engine, prefix: str, timeouts: Timeouts | None) -> None:
        super().__init__(engine, prefix, timeouts)
        self.capabilities |= {WAKEUP, SERVER_CLOCK}
        # A second small pool in autocommit mode whose sessions do not wait for
        # the WAL flush, for single-statement relaxed transitions.
        self._relaxed = create_engine(
            engine.url,
            isolation_level="AUTOCOMMIT",
            # Autocommit leaves no transaction to roll back when a connection goes back.
            pool_reset_on_return=None,
            connect_args={"options": "-c synchronous_commit=off"},
        )
        ping_when_idle(self._relaxed)
        # As many as the pool keeps idle: the job threads, the acker and the dispatcher.
        self._kept = Kept(self._relaxed, self._relaxed.pool.size())  # type: ignore[attr-defined]
        if timeouts is not None:
            for pool in (engine, self._relaxed):
                _install_timeouts(pool, timeouts)
        # Other single statements: the main pool, switched per checkout.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        # (single, plain) -> statement; a plain job (every protocol-2 field at
        # its default) sends version 1's six columns, the rest take column defaults.
        self._inserts = {
            (single, plain): _insert_sql(
                engine, self.jobs.name, PLAIN_COLUMNS if plain else INSERT_COLUMNS, single
            )
            for single in (True, False)
            for plain in (True, False)
        }
        self._channel = f"{prefix}jobs"
        self._listener = _Listener(engine, self._channel, timeouts)

    @contextlib.contextmanager
    def schema_lock(self, conn: Connection) -> Iterator[None]:
        with conn.begin():
            conn.execute(select(func.pg_advisory_xact_lock(_lock_key(self.prefix, ""))))
            yield

    def single_engine(self, relaxed: bool) -> Engine:
        return self._relaxed if relaxed else self._autocommit

    def kept(self, relaxed: bool) -> Kept | None:
        return self._kept if relaxed else None

    def begin(self, conn: Connection, relaxed: bool) -> None:
        if relaxed:
            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")

    def notify(self, conn: Connection) -> None:
        # Delivered at commit, and only then; repeats in one transaction fold into one.
        conn.execute(select(func.pg_notify(self._channel, "")))

    def transient(self, exc: DBAPIError) -> bool:
        return getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES

    @staticmethod
    def timed_out(exc: DBAPIError) -> bool:
        from psycopg.errors import ConnectionTimeout

        sqlstate = getattr(exc.orig, "sqlstate", None)
        return isinstance(exc.orig, ConnectionTimeout) or sqlstate == _QUERY_CANCELED

    def enqueue(self, runner: Runner, jobs: Sequence[NewJob]) -> None:
        # Any batch is one statement.
        runner.run(lambda conn: self.insert(conn, jobs), single=True)

    def insert(self, conn: Connection, jobs: Sequence[NewJob]) -> None:
        """One statement, so in autocommit mode one round trip and one WAL flush.

        PostgreSQL hands out seq values before commit, so without a lock a
        concurrent enqueue could commit a lower seq after a higher one was claimed
        as a serial head. Per-worker advisory locks, taken before the first row
        draws its seq and held to commit, make each worker's seqs commit in order;
        the wake-up notification is delivered at commit.
        """
        conn.exec_driver_sql(*self.insert_params(jobs))

    def insert_params(self, jobs: Sequence[NewJob]) -> tuple[str, dict[str, Any]]:
        """The SQL of :meth:`insert` (psycopg's ``%(name)s`` style) and its parameters;
        also sent by the native async enqueue (``exqueue_sql._aio``)."""
        plain = all_plain(jobs)
        columns = PLAIN_COLUMNS if plain else INSERT_COLUMNS
        sql = self._inserts[len(jobs) == 1, plain]
        params: dict[str, Any]
        if len(jobs) == 1:
            job = jobs[0]
            if plain:
                params = {
                    "id": job.id,
                    "worker": job.worker,
                    "payload": job.payload,
                    "max_attempts": job.max_attempts,
                    "run_at": job.run_at,
                    "enqueued_at": job.enqueued_at,
                }
            else:
                params = dict(zip(INSERT_COLUMNS, column_values(job), strict=True))
            params["keys"] = _lock_key(self.prefix, job.worker)
        else:
            if plain:
                params = {
                    "id": [j.id for j in jobs],
                    "worker": [j.worker for j in jobs],
                    "payload": [j.payload for j in jobs],
                    "max_attempts": [j.max_attempts for j in jobs],
                    "run_at": [j.run_at for j in jobs],
                    "enqueued_at": [j.enqueued_at for j in jobs],
                }
            else:
                rows = [column_values(j) for j in jobs]
                params = {c: [r[n] for r in rows] for n, c in enumerate(columns)}
            params["keys"] = sorted({_lock_key(self.prefix, w) for w in params["worker"]})
        params["channel"] = self._channel
        return sql, params

    def prepare(self) -> None:
        super().prepare()
        j, done = self.jobs.c, self.tables.done
        pick = (
            select(j.seq)
            .where(runnable(self.jobs, bindparam("worker"), bindparam("now")))
            .order_by(j.priority, j.run_at, j.seq)
            .limit(bindparam("limit"))
            .with_for_update(skip_locked=True)
            .cte("picked")
        )
        # One round trip; the CTE locks at most ``limit`` rows. RETURNING leaves out
        # what the claim itself sets (state, worker, lease: _claimed_fields) and what
        # no record holds (unique_period): fewer columns for the driver to read.
        returned = [c for c in self.jobs.c if c.name not in _NOT_RETURNED]
        leasing = (
            update(self.jobs)
            .where(j.seq == pick.c.seq)
            .values(
                state=RUNNING,
                attempt=j.attempt + 1,
                lease_owner=bindparam("owner"),
                lease_token=bindparam("token"),
                lease_expires=bindparam("until"),
            )
            .returning(*returned)
        )
        self._claim = Prepared(self.engine, leasing)
        # A completion: (id, token) pairs as two arrays, so one statement text
        # serves every batch size; ``id = ANY`` lets the planner use the id index.
        # One pair (a job thread's own success, most calls) goes as two scalars,
        # cheaper to send than arrays. Each in two statements: the completion
        # alone, and followed by a claim.
        ids = bindparam("ids", type_=ARRAY(Text))
        pairs = select(
            func.unnest(ids, bindparam("tokens", type_=ARRAY(Text)))
            .table_valued("id", "token")
            .render_derived()
        )
        many = and_(j.id == func.any(ids), tuple_(j.id, j.lease_token).in_(pairs))
        one = and_(j.id == bindparam("id"), j.lease_token == bindparam("token_done"))
        claimed = leasing.cte("claimed")
        self._complete: dict[bool, Prepared] = {}
        self._finish: dict[bool, Prepared] = {}
        for single, held in ((False, many), (True, one)):
            gone = (
                delete(self.jobs)
                .where(held, j.state == RUNNING)
                .returning(j.id, j.seq, j.worker, j.unique_key, j.unique_period)
                .cte("gone")
            )
            g = gone.c
            marks = (
                insert(done)
                .from_select(
                    ["worker", "unique_key", "seq", "job_id", "hold_until"],
                    select(
                        g.worker, g.unique_key, g.seq, g.id, bindparam("now") + g.unique_period
                    ).where(g.unique_key.is_not(None), g.unique_period.is_not(None)),
                )
                .cte("marks")
            )
            self._complete[single] = Prepared(self.engine, select(g.id).add_cte(marks))
            # Successes then a claim, one statement: the deleted ids as one array beside
            # the claimed rows (a row of NULLs when the claim takes nothing). Every CTE
            # sees the snapshot the statement started with; the rows it deletes are
            # running, so none of them is one the claim could take.
            finished = select(func.array_agg(g.id).label("finished")).subquery("finished")
            both = (
                select(finished.c.finished, *claimed.c)
                .select_from(finished.outerjoin(claimed, true()))
                .add_cte(marks)
            )
            self._finish[single] = Prepared(self.engine, both)

    def complete_marking(
        self, conn: Connection, pairs: Sequence[tuple[str, str]], now: float
    ) -> list[str]:
        """One statement: a DELETE ... RETURNING feeding the markers' INSERT."""
        return [r[0] for r in self._complete[len(pairs) == 1].rows(conn, **_held(pairs), now=now)]

    def finish_and_claim(
        self,
        conn: Connection,
        pairs: Sequence[tuple[str, str]],
        now: float,
        worker: str,
        limit: int,
        lease: Lease,
    ) -> tuple[list[str], list[JobRecord | Damaged]]:
        """One statement: ``complete_marking``'s CTEs, then ``claim_many``'s."""
        statement = self._finish[len(pairs) == 1]
        rows = statement.rows(
            conn, **_held(pairs), now=now, worker=worker, limit=limit, owner=lease.owner,
            token=lease.token, until=lease.until,
        )  # fmt: skip
        done: list[str] = rows[0][0] or []
        names = statement.names or ()
        # A row of NULLs (no seq, the second column) stands for "claimed nothing".
        known = _claimed_fields(worker, lease)
        found = [parse_values(names, r, known) for r in rows if r[1] is not None]
        return done, _claim_order(found)

    def add_unique_rows(self, conn: Connection, keys: Sequence[tuple[str, str]]) -> None:
        u = self.tables.unique
        rows = [{"worker": w, "unique_key": k} for w, k in keys]
        conn.execute(pg_insert(u).values(rows).on_conflict_do_nothing())

    def claim_many(
        self, conn: Connection, worker: str, limit: int, now: float, lease: Lease
    ) -> list[JobRecord | Damaged]:
        statement = self._claim
        rows = statement.rows(
            conn, worker=worker, now=now, limit=limit, owner=lease.owner, token=lease.token,
            until=lease.until,
        )  # fmt: skip
        names = statement.names or ()
        known = _claimed_fields(worker, lease)
        return _claim_order([parse_values(names, r, known) for r in rows])

    def wait_for_jobs(self, timeout: float) -> bool:
        return self._listener.wait(timeout)

    def server_time(self, conn: Connection) -> float:
        # clock_timestamp(), not now(): now() is the transaction's start.
        return float(
            conn.execute(select(func.extract("epoch", func.clock_timestamp()))).scalar_one()
        )

    def close(self) -> None:
        self._listener.close()
        self._kept.close()
        self._relaxed.dispose()


class _Listener:
    """One ``LISTEN`` connection shared by the threads of one storage."""

    def __init__(self, engine: Engine, channel: str, timeouts: Timeouts | None) -> None:
        self._engine = engine
        self._channel = channel
        self._timeouts = timeouts
        self._wake = threading.Condition()
        self._signal = 0
        self._listening = False
        self._conn: psycopg.Connection[Any] | None = None
        # Until LISTEN runs, notifications are unseen: the first wait reports a
        # possible wake-up at once, as it does after a reconnect.
        self._lost = True
        self._closed = False

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for a NOTIFY from enqueue/retry/release/requeue.

        One thread at a time reads the LISTEN connection and wakes the others.
        Notifications between calls are kept, so none is lost. The first call
        (which starts listening) and the first call after the connection was
        lost and is back return True at once: what was sent meanwhile is unseen.
        """
        deadline = time.monotonic() + timeout
        with self._wake:
            seen = self._signal
        while True:
            with self._wake:
                while True:
                    if self._signal != seen:
                        return True
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._closed:
                        return self._signal != seen
                    if not self._listening:
                        self._listening = True
                        break
                    self._wake.wait(remaining)
            woken = False
            try:
                woken = self._listen(min(remaining, _LISTEN_SLICE))
            finally:
                with self._wake:
                    self._listening = False
                    if woken:
                        self._signal += 1
                    if self._closed:
                        self._drop()
                    self._wake.notify_all()

    def _listen(self, timeout: float) -> bool:
        import psycopg
        from psycopg import sql

        if self._conn is None:
            try:
                cargs, cparams = self._engine.dialect.create_connect_args(self._engine.url)
                if self._timeouts is not None:
                    _add_timeouts(cparams, self._timeouts)
                conn = psycopg.connect(*cargs, autocommit=True, **cparams)
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            except psycopg.OperationalError:
                time.sleep(timeout)  # the server is away: wait, do not spin
                return False
            self._conn = conn
            if self._lost:
                self._lost = False
                return True
        try:
            woken = any(True for _ in self._conn.notifies(timeout=timeout, stop_after=1))
            if woken:
                # Several notifications often arrive together: one wake-up covers them.
                for _ in self._conn.notifies(timeout=0):
                    pass
            return woken
        except psycopg.OperationalError:
            self._drop()
            self._lost = True
            return False

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._signal += 1
            if not self._listening:
                self._drop()
            self._wake.notify_all()


def _held(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The values of a completion's held-job condition: scalars for one pair, else arrays."""
    if len(pairs) == 1:
        return {"id": pairs[0][0], "token_done": pairs[0][1]}
    return {"ids": [i for i, _ in pairs], "tokens": [t for _, t in pairs]}


#: Columns a claim's RETURNING leaves out (see _claimed_fields).
_NOT_RETURNED = frozenset(
    ("state", "worker", "lease_owner", "lease_token", "lease_expires", "unique_period")
)


def _claimed_fields(worker: str, lease: Lease) -> dict[str, Any]:
    """The record fields of every row a claim takes, as its UPDATE set them (the
    worker is its WHERE's): not read back from the database."""
    return {
        "state": RUNNING,
        "worker": worker,
        "lease_owner": lease.owner,
        "lease_token": lease.token,
        "lease_expires": lease.until,
    }


def _claim_order(found: list[JobRecord | Damaged]) -> list[JobRecord | Damaged]:
    """Claimed rows in claim order (RETURNING has none), the damaged ones last."""
    good = [r for r in found if isinstance(r, JobRecord)]
    good.sort(key=lambda r: (r.priority, r.run_at, r.seq))
    return [*good, *(r for r in found if isinstance(r, Damaged))]


def _insert_sql(engine: Engine, table: str, columns: Sequence[str], single: bool) -> str:
    """The enqueue: locks, notification and rows in one statement.

    A batch comes as one array per column, so its statement text is the same for
    every batch size; a single job comes as scalars, cheaper to send. The lock
    CTE is an aggregate: its single row, needed by every inserted row, exists
    only once all locks are held, so no row draws a seq before that; ``ORDER BY
    ord`` gives seqs in batch order. Columns not in ``columns`` take their defaults.
    """
    name = engine.dialect.identifier_preparer.quote(table)
    names = ", ".join(columns)
    aliases = f"r({names}, ord)"
    suffix = "" if single else "[]"
    values = ", ".join(f"%({c})s::{_PG_TYPES[c]}{suffix}" for c in columns)
    if single:
        keys = "(VALUES (%(keys)s::bigint)) AS l(k)"
        rows = f"(VALUES ({values}, 1)) AS {aliases}"
    else:
        keys = "unnest(%(keys)s::bigint[]) AS k"
        rows = f"unnest({values}) WITH ORDINALITY AS {aliases}"
    picked = ", ".join(f"r.{c}" for c in columns)
    return (
        f"WITH locks AS MATERIALIZED (SELECT count(pg_advisory_xact_lock(k)) AS n FROM {keys}), "
        "wake AS MATERIALIZED (SELECT pg_notify(%(channel)s, '')) "
        f"INSERT INTO {name} ({names}, state, attempt, errors) "
        f"SELECT {picked}, '{WAITING}', 0, '[]' FROM locks, wake, {rows} ORDER BY r.ord"
    )


_PG_TYPES = {
    "id": "text",
    "worker": "text",
    "payload": "bytea",
    "max_attempts": "int",
    "run_at": "float8",
    "enqueued_at": "float8",
    "priority": "int",
    "meta": "text",
    "timeout": "float8",
    "expires_at": "float8",
    "unique_key": "text",
    "unique_period": "float8",
    "partition_key": "text",
}


def _install_timeouts(engine: Engine, timeouts: Timeouts) -> None:
    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        _add_timeouts(cparams, timeouts)


def _add_timeouts(cparams: MutableMapping[str, Any], timeouts: Timeouts) -> None:
    """psycopg connect parameters with the timeouts, unless the URL sets its own.

    psycopg's ``connect_timeout`` covers the login too, so a server that accepts
    and never answers is given up on; without it psycopg waits 130 s. The
    statement timeout is the server's ``statement_timeout``.
    """
    if timeouts.connect is not None:
        # libpq takes whole seconds.
        cparams.setdefault("connect_timeout", str(max(1, math.ceil(timeouts.connect))))
    options = str(cparams.get("options", ""))
    if timeouts.statement is not None and "statement_timeout" not in options:
        millis = max(1, math.ceil(timeouts.statement * 1000))
        cparams["options"] = f"{options} -c statement_timeout={millis}".strip()


def _lock_key(prefix: str, name: str) -> int:
    digest = hashlib.blake2b(f"{prefix}\0{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
