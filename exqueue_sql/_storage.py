"""SQLStorage: the storage protocol on SQLite, PostgreSQL and MariaDB/MySQL.

Each protocol call is one short transaction, run by the one transaction runner
(``_runner``). Claims lock the rows they take (``FOR UPDATE SKIP LOCKED`` on
the servers; SQLite's ``BEGIN IMMEDIATE`` write lock), every other transition
is a conditional UPDATE/DELETE whose WHERE clause is the precondition (state,
fencing token). The statements here are portable; what one database does its
own way lives in its dialect module (``_sqlite``, ``_postgres``, ``_mysql``).
The backend holds no policy.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    false,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy import delete as sql_delete
from sqlalchemy.exc import DBAPIError, IntegrityError

from exqueue.errors import ConfigurationError
from exqueue.storage import (
    ASYNC_ENQUEUE,
    CANCEL,
    DEAD,
    HISTORY,
    LIMITS,
    NODES,
    PAUSE,
    RUNNING,
    SCHEDULES,
    SNOOZE,
    WAITING,
    JobRecord,
    NewJob,
    Recovered,
)
from exqueue.storage_next import FINISH_AND_CLAIM, FINISH_IN_PARALLEL
from exqueue.storage_scan import JOB_SCAN
from exqueue_sql import _expiry, _unique
from exqueue_sql._aio import SQLAsyncEnqueue
from exqueue_sql._control import SQLControl, create_control_table
from exqueue_sql._dialect import Dialect, Lease, StorageTimeoutError, Timeouts, not_paused
from exqueue_sql._finish import SQLFinish
from exqueue_sql._limits import SQLLimits, bury_new, check_jobs, create_limit_tables, has_dead
from exqueue_sql._limits import without_unique as _without_unique
from exqueue_sql._manual import SQLManual
from exqueue_sql._mysql import MySQLDialect
from exqueue_sql._observe import SQLObserve, create_observe_tables
from exqueue_sql._postgres import PostgresDialect
from exqueue_sql._prepared import CHUNK, chunked
from exqueue_sql._records import (
    Damaged,
    damage,
    parse,
    read,
    with_errors,
)
from exqueue_sql._runner import Runner, connection_of
from exqueue_sql._schedules import SQLSchedules, create_schedules_table
from exqueue_sql._schema import DEFAULT_PREFIX, open_tables
from exqueue_sql._sqlite import SQLiteDialect
from exqueue_sql._urls import build_engine, parse_url

__all__ = ["SQLStorage"]

_DIALECTS: dict[str, type[Dialect]] = {
    "sqlite": SQLiteDialect,
    "postgresql": PostgresDialect,
    "mysql": MySQLDialect,
    "mariadb": MySQLDialect,
}
_DUPLICATE = "duplicate job id in enqueue batch"

log = logging.getLogger("exqueue")


class SQLStorage(
    SQLFinish, SQLManual, SQLSchedules, SQLObserve, SQLControl, SQLLimits, SQLAsyncEnqueue
):
    """Jobs in SQL tables named ``{prefix}jobs``, ``{prefix}meta`` and ``{prefix}unique``.

    ``SQLStorage("sqlite:///jobs.db")``, ``SQLStorage("postgresql://host/db")``,
    ``SQLStorage("mysql://user@host/db")``; or pass your own ``engine=``.
    """

    capabilities: frozenset[str]

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        create: bool = True,
        engine: Engine | None = None,
        connect_timeout: float | None = 10.0,
        statement_timeout: float | None = 60.0,
    ) -> None:
        if not prefix.replace("_", "a").isalnum() or not prefix.isascii() or len(prefix) > 40:
            raise ConfigurationError(
                f"table prefix {prefix!r} must be at most 40 ASCII letters, digits or underscores"
            )
        timeouts = Timeouts(
            _seconds("connect_timeout", connect_timeout),
            _seconds("statement_timeout", statement_timeout),
        )
        if engine is None:
            if url is None:
                raise ConfigurationError("SQLStorage needs a URL or an engine")
            engine = build_engine(parse_url(url))
            own = timeouts
        else:
            own = None  # the caller's engine keeps the caller's options
        self.engine = engine
        self.prefix = prefix
        #: The schema version this object upgraded the tables from, or None.
        self.upgraded_from: int | None = None
        # An engine of another database gets the portable SQL of the base dialect.
        kind = _DIALECTS.get(engine.dialect.name, Dialect)
        try:
            self._dialect = kind(engine, prefix, own)
            self._tables = self._dialect.tables
            self._jobs = self._tables.jobs
            self._lock = self._dialect.lock
            self.capabilities = self._dialect.capabilities | {
                SCHEDULES,
                NODES,
                HISTORY,
                CANCEL,
                SNOOZE,
                LIMITS,
                PAUSE,
                JOB_SCAN,
                FINISH_AND_CLAIM,
            }
            if self._dialect.finishes_in_one_statement:
                # Each call is one autocommit statement on a connection of its own.
                self.capabilities |= {FINISH_IN_PARALLEL}
            if self._open_native_enqueue(self._dialect, _DUPLICATE):
                self.capabilities |= {ASYNC_ENQUEUE}
            self._runner = Runner(engine, self._dialect)
            self._run = self._runner.run
            self._prepare(create)
        except BaseException as exc:
            if hasattr(self, "_dialect"):
                self._dialect.close()
            if own is not None:
                engine.dispose()
            if isinstance(exc, DBAPIError) and kind.timed_out(exc):
                limits = (
                    f"connect_timeout={own.connect} s, statement_timeout={own.statement} s"
                    if own is not None
                    else "the timeouts of the engine passed in"
                )
                raise StorageTimeoutError(
                    f"the database at {engine.url.render_as_string(hide_password=True)!r} "
                    f"did not answer in time ({limits}): check that the server is "
                    "up and that the URL names it, or raise the timeouts"
                ) from exc
            raise

    # -- schema ---------------------------------------------------------------

    def _prepare(self, create: bool) -> None:
        """Create the tables if asked and check the stored schema version."""
        unusable = self._dialect.unusable(create)
        if unusable is not None:
            raise ConfigurationError(unusable)
        with self._schema_lock() as conn:
            self.upgraded_from = open_tables(conn, self._tables, self.prefix, create)
            create_schedules_table(conn, self._jobs.metadata, self.prefix)
            create_observe_tables(conn, self._jobs.metadata, self.prefix)
            create_control_table(conn, self._jobs.metadata, self.prefix)
            create_limit_tables(conn, self._jobs.metadata, self.prefix)

    @contextlib.contextmanager
    def _schema_lock(self) -> Iterator[Connection]:
        """A transaction in which no other process creates or checks the same tables."""
        with self._lock, self.engine.connect() as conn, self._dialect.schema_lock(conn):
            yield conn

    def destroy(self) -> None:
        """Drop this prefix's tables and everything in them."""
        with self._lock:
            self._jobs.metadata.drop_all(self.engine)

    def _held(self, job_id: str, token: str) -> Any:
        j = self._jobs.c
        return and_(j.id == job_id, j.state == RUNNING, j.lease_token == token)

    # -- enqueue ---------------------------------------------------------------

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        _check_unique(jobs)
        if not jobs:
            return []
        check_jobs(jobs)
        dialect = self._dialect
        dead = has_dead(jobs)
        if dead:
            jobs = _without_unique(jobs)
        keys = _unique.keys_of(jobs)
        try:
            if dead:
                # Stored dead with their error in the inserting transaction (see _limits).
                if keys and not dialect.serializes_writes:
                    self._run(lambda conn: dialect.add_unique_rows(conn, keys), single=True)
                return self._run(lambda conn: self._enqueue_in(conn, jobs))
            if not keys:
                dialect.enqueue(self._runner, jobs)
                return [job.id for job in jobs]
            if not dialect.serializes_writes:
                # Committed before the transaction that locks them: locking a row
                # that exists waits for its holder, where two inserts of one new
                # key could deadlock.
                self._run(lambda conn: dialect.add_unique_rows(conn, keys), single=True)
            return self._run(lambda conn: _unique.enqueue(conn, dialect, jobs))
        except IntegrityError as exc:
            raise ValueError(_DUPLICATE) from exc

    def enqueue_in(self, transaction: object, jobs: Sequence[NewJob]) -> list[str]:
        """Insert ``jobs`` through the caller's ``Connection``, ``Session`` or ``Transaction``.

        They commit or roll back with it. A duplicate id raises ``ValueError``
        before anything is written, so the caller's transaction stays usable.
        """
        conn = connection_of(transaction)
        if conn.dialect.name != self.engine.dialect.name:
            raise ConfigurationError(
                f"enqueue_in got a {conn.dialect.name} connection, but this storage is on "
                f"{self.engine.dialect.name}: pass a connection to the storage's own database"
            )
        _check_unique(jobs)
        if not jobs:
            return []
        check_jobs(jobs)
        return self._enqueue_in(conn, _without_unique(jobs))

    def _enqueue_in(self, conn: Connection, jobs: Sequence[NewJob]) -> list[str]:
        if has_dead(jobs):
            ids = self._enqueue_in_alive(conn, jobs)
            bury_new(conn, self._jobs, jobs)
            return ids
        return self._enqueue_in_alive(conn, jobs)

    def _enqueue_in_alive(self, conn: Connection, jobs: Sequence[NewJob]) -> list[str]:
        if _unique.keys_of(jobs):
            # The key rows are locked in the caller's transaction (see _unique).
            return _unique.enqueue(conn, self._dialect, jobs)
        j = self._jobs.c
        for chunk in chunked([job.id for job in jobs]):
            if conn.execute(select(j.id).where(j.id.in_(chunk)).limit(1)).first():
                raise ValueError(_DUPLICATE)
        try:
            self._dialect.insert(conn, jobs)
        except IntegrityError as exc:
            raise ValueError(_DUPLICATE) from exc
        return [job.id for job in jobs]

    # -- claim -----------------------------------------------------------------

    def claim(
        self,
        worker: str,
        limit: int,
        *,
        now: float,
        owner: str,
        token: str,
        lease_until: float,
        serial: bool = False,
    ) -> list[JobRecord]:
        if limit <= 0:
            return []
        lease = Lease(owner, token, lease_until)
        if not serial:
            # Where the claim is one autocommit statement, a burial is a second one.
            single = self._dialect.claim_is_one_statement
            return self._run(
                lambda conn: self._claim_many(conn, worker, limit, now, lease),
                relaxed=True,
                single=single,
            )
        return self._run(lambda conn: self._claim_serial(conn, worker, now, lease), relaxed=True)

    def _claim_many(
        self, conn: Connection, worker: str, limit: int, now: float, lease: Lease
    ) -> list[JobRecord]:
        return self._good(conn, self._dialect.claim_many(conn, worker, limit, now, lease))

    def _claim_serial(
        self, conn: Connection, worker: str, now: float, lease: Lease
    ) -> list[JobRecord]:
        """The head of a serial type, leased in ``conn``'s transaction if runnable."""
        j = self._jobs.c
        # Lock the head itself (no SKIP LOCKED): a second claimer waits for the
        # first to commit and then sees the head running, so never runs two.
        head = conn.execute(
            select(self._jobs)
            .where(j.worker == worker, not_paused(self._jobs, worker))
            .order_by(j.seq)
            .limit(1)
            .with_for_update()
        ).first()
        if head is None:
            return []
        found = parse(head)
        if isinstance(found, Damaged):
            # A damaged head dies alone; the next claim takes the job after it.
            return self._good(conn, [found])
        if found.state != WAITING or found.run_at > now:
            return []
        if found.expires_at is not None and found.expires_at <= now:
            return []  # expire() buries it; the head stays in place until then
        conn.execute(update(self._jobs).where(j.seq == head.seq).values(**lease.values(self._jobs)))
        return self._good(conn, [lease.apply(found)])

    def _good(self, conn: Connection, found: Sequence[JobRecord | Damaged]) -> list[JobRecord]:
        """The readable jobs of ``found``; each damaged one is made dead with the reason."""
        damaged = [r for r in found if isinstance(r, Damaged)]
        if damaged:
            self._bury_damaged(conn, damaged)
        return [r for r in found if isinstance(r, JobRecord)]

    def _bury_damaged(self, conn: Connection, damaged: Sequence[Damaged]) -> None:
        j = self._jobs.c
        for row in damaged:
            conn.execute(update(self._jobs).where(j.seq == row.seq).values(**row.values))
            log.error("job %s is dead: %s", row.id, row.reason)

    # -- transitions of a held job -----------------------------------------------

    def complete(self, job_id: str, token: str, *, now: float | None = None) -> bool:
        return bool(self._complete([(job_id, token)], now))

    def complete_many(
        self, items: Sequence[tuple[str, str]], *, now: float | None = None
    ) -> list[str]:
        """Many successes in one transaction: one commit (one fsync) for the batch."""
        pairs = list(dict.fromkeys(items))
        return self._complete(pairs, now) if pairs else []

    def _complete(self, pairs: list[tuple[str, str]], now: float | None) -> list[str]:
        """Delete the running jobs of ``pairs`` (id, token); the ids deleted.

        With ``now``, a job enqueued with a unique period leaves a completion
        marker in the same atomic step as its deletion (``_unique``).
        PostgreSQL does both in one statement; elsewhere the jobs that leave
        none (most) go in one statement as in version 1, and the others in a
        transaction of their own. The statements are the dialect's, built once.
        """
        dialect = self._dialect
        chunks = list(chunked(pairs))
        single = len(chunks) == 1
        if now is not None and dialect.marks_in_one_statement:

            def marking(conn: Connection) -> list[str]:
                return [i for chunk in chunks for i in dialect.complete_marking(conn, chunk, now)]

            return self._run(marking, relaxed=True, single=single)
        unmarked = now is not None

        def deleting(conn: Connection) -> list[str]:
            return [i for chunk in chunks for i in dialect.complete_plain(conn, chunk, unmarked)]

        done = self._run(deleting, relaxed=True, single=single)
        if now is None or len(done) == len(pairs):
            return done
        return done + self._run(lambda conn: self._keep(conn, chunks, now), relaxed=True)

    def _keep(self, conn: Connection, chunks: list[list[tuple[str, str]]], now: float) -> list[str]:
        """Delete the held jobs of ``chunks`` that the plain DELETE left, with their markers.

        Those are the jobs whose completion holds their unique key, and jobs not held.
        """
        j = self._jobs.c
        kept: list[Any] = []
        for chunk in chunks:
            held = and_(tuple_(j.id, j.lease_token).in_(chunk), j.state == RUNNING)
            kept += conn.execute(
                select(j.id, j.seq, j.worker, j.unique_key, j.unique_period)
                .where(held)
                .with_for_update()
            ).all()
        if kept:
            conn.execute(sql_delete(self._jobs).where(j.id.in_([r.id for r in kept])))
            _unique.hold(conn, self._dialect, _unique.completions(kept), now)
        return [r.id for r in kept]

    def schedule_retry(self, job_id: str, token: str, *, run_at: float, error: str) -> bool:
        return self._fail(job_id, token, error, WAITING, run_at)

    def bury(self, job_id: str, token: str, *, error: str) -> bool:
        return self._fail(job_id, token, error, DEAD, None)

    def _fail(self, job_id: str, token: str, error: str, state: str, run_at: float | None) -> bool:
        """A held job's failure: its error recorded, then waiting at ``run_at`` or dead."""
        dialect = self._dialect
        statements = dialect.failing

        def work(conn: Connection) -> bool:
            found = statements.held_errors.run(conn, id=job_id, token=token).first()
            if found is None:
                return False
            errors, count = with_errors(*read(found._mapping), error)
            values = {"id": job_id, "token": token, "errors": errors, "count": count}
            if state == WAITING:
                statements.retry.run(conn, run_at=run_at, **values)
                dialect.notify(conn)
            else:
                statements.bury.run(conn, **values)
            return True

        return self._run(work)

    def release(self, job_id: str, token: str) -> bool:
        stmt = (
            update(self._jobs)
            .where(self._held(job_id, token))
            .values(state=WAITING, attempt=self._jobs.c.attempt - 1, **_UNLEASED)
        )

        def work(conn: Connection) -> bool:
            if conn.execute(stmt).rowcount != 1:
                return False
            self._dialect.notify(conn)
            return True

        return self._run(work)

    def extend(self, token: str, job_ids: Sequence[str], lease_until: float) -> list[str]:
        j = self._jobs.c
        wanted = list(dict.fromkeys(job_ids))

        def work(conn: Connection) -> set[str]:
            done: set[str] = set()
            for chunk in chunked(wanted):
                held = and_(j.id.in_(chunk), j.state == RUNNING, j.lease_token == token)
                stmt = update(self._jobs).where(held).values(lease_expires=lease_until)
                if conn.dialect.update_returning:
                    done.update(conn.scalars(stmt.returning(j.id)))
                else:
                    conn.execute(stmt)
                    # The rows just updated stay locked by us until commit.
                    done.update(conn.scalars(select(j.id).where(held)))
            return done

        single = len(wanted) <= CHUNK
        done = self._run(work, relaxed=True, single=single) if wanted else set()
        return [job_id for job_id in job_ids if job_id in done]

    def recover(self, now: float, *, owner: str | None = None, error: str) -> Recovered:
        j = self._jobs.c
        mine = j.lease_owner == owner if owner is not None else false()

        def work(conn: Connection) -> Recovered:
            # SKIP LOCKED: a row locked right now is being touched by its holder;
            # the next recovery pass sees it.
            # A running row without a lease expiry (damaged) would never expire.
            expired = or_(j.lease_expires <= now, j.lease_expires.is_(None), mine)
            lost = conn.execute(
                select(j.seq, j.id, j.attempt, j.max_attempts, j.errors, j.error_count)
                .where(j.state == RUNNING, expired)
                .order_by(j.seq)
                .with_for_update(skip_locked=True)
            ).all()
            # (seq, id, (errors, error_count) after this recovery's error)
            waiting: list[tuple[int, str, tuple[str, int]]] = []
            dead: list[tuple[int, str, tuple[str, int]]] = []
            damaged: list[Damaged] = []
            for row in lost:
                fields, bad = read(row._mapping)
                if bad:
                    damaged.append(damage(row._mapping, fields, bad))
                    continue
                goes = waiting if fields["attempt"] < fields["max_attempts"] else dead
                goes.append((row.seq, fields["id"], with_errors(fields, bad, error)))
            for rows, values in (
                (waiting, {"state": WAITING, "run_at": now}),
                (dead, {"state": DEAD}),
            ):
                if rows:
                    stmt = update(self._jobs).where(j.seq == bindparam("b_seq"))
                    stmt = stmt.values(
                        errors=bindparam("b_errors"),
                        error_count=bindparam("b_count"),
                        **_UNLEASED,
                        **values,
                    )
                    conn.execute(
                        stmt,
                        [
                            {"b_seq": seq, "b_errors": errors, "b_count": count}
                            for seq, _, (errors, count) in rows
                        ],
                    )
            self._bury_damaged(conn, damaged)
            if waiting:
                self._dialect.notify(conn)
            return Recovered(
                waiting=tuple(job_id for _, job_id, _ in waiting),
                dead=(*(job_id for _, job_id, _ in dead), *(d.id for d in damaged)),
            )

        return self._run(work)

    def expire(self, now: float, *, limit: int = 1000) -> list[str]:
        """Waiting jobs past ``expires_at`` -> dead with :data:`EXPIRED`; prunes unique keys.

        Key rows whose completions no longer hold them are removed here too, in
        a transaction of their own, so the unique table stays as small as the
        keys in use (the runtime calls this every few seconds).
        """
        jobs, dialect = self._jobs, self._dialect

        def work(conn: Connection) -> list[str]:
            expired, damaged = _expiry.expire(conn, jobs, now, limit)
            self._bury_damaged(conn, damaged)
            return expired

        expired = self._run(work) if limit > 0 else []
        self._run(lambda conn: _unique.prune(conn, dialect, now), relaxed=True)
        return expired

    # -- wake-ups (PostgreSQL) -----------------------------------------------------

    def wait_for_jobs(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for a wake-up (PostgreSQL LISTEN/NOTIFY).

        Elsewhere it raises ``NotImplementedError``; see docs/sql.md.
        """
        return self._dialect.wait_for_jobs(timeout)

    def server_time(self) -> float:
        """The database server's clock (PostgreSQL, MariaDB/MySQL; see ``SERVER_CLOCK``)."""
        dialect = self._dialect
        return self._run(dialect.server_time, read=True, single=True)

    def close(self) -> None:
        self._close_limits()
        self._close_native_enqueue()
        self._dialect.close()
        self.engine.dispose()


# -- helpers --------------------------------------------------------------------

_UNLEASED: dict[str, Any] = {"lease_owner": None, "lease_token": None, "lease_expires": None}


def _seconds(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e6:
        raise ConfigurationError(f"{name} must be a number of seconds above 0, or None: {value!r}")
    return float(value)


def _check_unique(jobs: Sequence[NewJob]) -> None:
    if len({job.id for job in jobs}) != len(jobs):
        raise ValueError(_DUPLICATE)
