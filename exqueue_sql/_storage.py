"""SQLStorage: the storage protocol on SQLite, PostgreSQL and MariaDB/MySQL.

Each protocol call is one short transaction. Claims lock the rows they take
(``FOR UPDATE SKIP LOCKED`` on the servers; SQLite's ``BEGIN IMMEDIATE`` write
lock), every other transition is a conditional UPDATE/DELETE whose WHERE clause
is the precondition (state, fencing token). The backend holds no policy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    and_,
    bindparam,
    case,
    create_engine,
    event,
    false,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy import delete as sql_delete
from sqlalchemy.exc import DBAPIError, IntegrityError

from exqueue.errors import ConfigurationError, SchemaVersionError
from exqueue.storage import (
    COMPLETE_MANY,
    DEAD,
    MULTI_PROCESS,
    PERSISTENT,
    RUNNING,
    TRANSACTIONAL_ENQUEUE,
    WAITING,
    WAKEUP,
    Counts,
    DeleteResult,
    JobRecord,
    JobState,
    NewJob,
    Recovered,
    RequeueResult,
)
from exqueue_sql._schema import (
    DEFAULT_PREFIX,
    MARIADB_COLLATION,
    MYSQL_COLLATION,
    SCHEMA_VERSION,
    tables,
)
from exqueue_sql._urls import build_engine, is_memory, parse_url, ping_when_idle

if TYPE_CHECKING:
    import psycopg

__all__ = ["SQLStorage"]

T = TypeVar("T")

_VERSION_KEY = "schema_version"
_SQLITE_BUSY_TIMEOUT_MS = 30_000
_RETRIES = 6  # deadlocks and serialization failures are retried this often
_LISTEN_SLICE = 0.5  # a waiting listener re-checks close() at least this often
_CHUNK = 500  # ids per IN (...) list


class SQLStorage:
    """Jobs in SQL tables named ``{prefix}jobs`` and ``{prefix}meta``.

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
    ) -> None:
        if not prefix.replace("_", "a").isalnum() or not prefix.isascii() or len(prefix) > 40:
            raise ConfigurationError(
                f"table prefix {prefix!r} must be at most 40 ASCII letters, digits or underscores"
            )
        if engine is None:
            if url is None:
                raise ConfigurationError("SQLStorage needs a URL or an engine")
            engine = build_engine(parse_url(url))
        self.engine = engine
        self.prefix = prefix
        self._dialect = engine.dialect.name
        collate = MARIADB_COLLATION
        if self._dialect in ("mysql", "mariadb"):
            with engine.connect():  # the first connection tells MariaDB from MySQL
                if not getattr(engine.dialect, "is_mariadb", False):
                    collate = MYSQL_COLLATION
        self._tables = tables(prefix, mysql_collate=collate)
        self._jobs = self._tables.jobs
        self._channel = f"{prefix}jobs"
        memory = is_memory(engine.url)
        # A private :memory: database is one connection shared by all threads, so
        # calls are serialized here; elsewhere the database does the locking.
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if memory else contextlib.nullcontext()
        )
        caps = {TRANSACTIONAL_ENQUEUE, COMPLETE_MANY}
        if not memory:
            caps |= {PERSISTENT, MULTI_PROCESS}
        if self._dialect == "postgresql":
            caps.add(WAKEUP)
        self.capabilities = frozenset(caps)
        # PostgreSQL: a second small pool in autocommit mode whose sessions do not
        # wait for the WAL flush, for single-statement relaxed transitions.
        self._relaxed_engine: Engine | None = None
        if self._dialect == "postgresql":
            self._relaxed_engine = create_engine(
                engine.url,
                isolation_level="AUTOCOMMIT",
                connect_args={"options": "-c synchronous_commit=off"},
            )
            ping_when_idle(self._relaxed_engine)
        # Single-statement transitions in autocommit mode, without BEGIN and COMMIT
        # round trips: on PostgreSQL through the main pool, switched per checkout.
        self._autocommit_engine: Engine | None = None
        if self._dialect == "postgresql":
            self._autocommit_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
            self._pg_insert_one = _pg_insert_sql(engine, self._jobs.name, batch=False)
            self._pg_insert_many = _pg_insert_sql(engine, self._jobs.name, batch=True)
        elif self._dialect in ("mysql", "mariadb"):
            # PyMySQL switches autocommit with a round trip, so not per checkout:
            # a small pool of its own, in autocommit from the start.
            self._autocommit_engine = create_engine(
                engine.url, isolation_level="AUTOCOMMIT", pool_reset_on_return=None
            )
            ping_when_idle(self._autocommit_engine)
        self._insert_sql = _insert_sql(engine, self._jobs.name)
        if self._dialect == "sqlite":
            _install_sqlite_hooks(engine)
        # wait_for_jobs state (PostgreSQL): one LISTEN connection, shared by threads.
        self._wake = threading.Condition()
        self._signal = 0
        self._listening = False
        self._listener: psycopg.Connection[Any] | None = None
        # Until LISTEN runs, notifications are unseen: the first wait reports a
        # possible wake-up at once, as it does after a reconnect.
        self._listener_lost = True
        self._closed = False
        self._prepare(create)

    # -- schema ---------------------------------------------------------------

    def _prepare(self, create: bool) -> None:
        """Create the tables if asked and check the stored schema version."""
        meta = self._tables.meta
        with self._schema_lock() as conn:
            have = inspect(conn)
            has_jobs, has_meta = have.has_table(self._jobs.name), have.has_table(meta.name)
            if has_jobs and not has_meta:
                raise SchemaVersionError(
                    f"table {self._jobs.name!r} exists without {meta.name!r}: it was not "
                    "created by this version of exqueue; use another prefix or migrate it"
                )
            if not (has_jobs and has_meta):
                if not create:
                    raise ConfigurationError(
                        f"the exqueue tables {self._jobs.name!r}/{meta.name!r} do not exist: "
                        "pass create=True or create them from exqueue_sql.metadata (Alembic)"
                    )
                self._jobs.metadata.create_all(conn)
            found = conn.scalar(select(meta.c.value).where(meta.c.key == _VERSION_KEY))
            if found is None:
                # Fresh tables (ours, or made by Alembic from exqueue_sql.metadata).
                conn.execute(insert(meta).values(key=_VERSION_KEY, value=str(SCHEMA_VERSION)))
            elif found != str(SCHEMA_VERSION):
                raise SchemaVersionError(
                    f"the exqueue tables with prefix {self.prefix!r} have schema version "
                    f"{found}, but this exqueue uses schema version {SCHEMA_VERSION}: "
                    "migrate them (see docs/sql.md) or use a different prefix"
                )

    @contextlib.contextmanager
    def _schema_lock(self) -> Iterator[Connection]:
        """A transaction in which no other process creates or checks the same tables."""
        with self._lock, self.engine.connect() as conn:
            if self._dialect in ("mysql", "mariadb"):
                # DDL commits implicitly on MariaDB, so a session lock spans it.
                name = f"exqueue:{self.prefix}"
                conn.execute(text("SELECT GET_LOCK(:n, 60)"), {"n": name})
                conn.commit()
                try:
                    with conn.begin():
                        yield conn
                finally:
                    conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": name})
                    conn.commit()
                return
            with conn.begin():
                if self._dialect == "postgresql":
                    conn.execute(select(func.pg_advisory_xact_lock(_lock_key(self.prefix, ""))))
                yield conn

    def destroy(self) -> None:
        """Drop this prefix's tables and everything in them."""
        with self._lock:
            self._jobs.metadata.drop_all(self.engine)

    # -- plumbing --------------------------------------------------------------

    def _run(
        self,
        work: Callable[[Connection], T],
        *,
        read: bool = False,
        relaxed: bool = False,
        single: bool = False,
    ) -> T:
        """Run ``work`` in one transaction, retrying deadlocks and serialization failures.

        ``relaxed`` marks a transition whose loss in a database crash only makes a
        job run again (a claim, a success, a lease extension): on PostgreSQL it
        commits without waiting for the WAL flush. Enqueues, retries and deaths
        always wait for it, so a job is never lost and no error goes unrecorded.
        ``single`` says ``work`` is one statement, which PostgreSQL and MariaDB
        then run in autocommit mode: no BEGIN or COMMIT round trips.
        """
        fast = None
        if single:
            # Relaxed commits where the database has them (PostgreSQL), else plain
            # autocommit: a single statement needs no transaction around it.
            fast = (relaxed and self._relaxed_engine) or self._autocommit_engine
        for attempt in range(_RETRIES):
            committing = False
            try:
                if fast is not None:
                    with fast.connect() as conn:
                        return work(conn)
                with self._lock, self.engine.connect() as conn:
                    if read:
                        conn.execution_options(exqueue_read=True)
                    with conn.begin():
                        if relaxed and self._dialect == "postgresql":
                            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                        result = work(conn)
                        committing = True
                    return result
            except DBAPIError as exc:
                # A connection that broke before COMMIT was sent committed nothing,
                # so the transaction runs again on a fresh one.
                stale = exc.connection_invalidated and not committing
                if attempt == _RETRIES - 1 or not (stale or _transient(exc)):
                    raise
            time.sleep(random.uniform(0.001, 0.01) * 2**attempt)
        raise AssertionError("unreachable")

    def _notify(self, conn: Connection) -> None:
        # Delivered at commit, and only then; repeats in one transaction fold into one.
        if self._dialect == "postgresql":
            conn.execute(select(func.pg_notify(self._channel, "")))

    def _held(self, job_id: str, token: str) -> Any:
        j = self._jobs.c
        return and_(j.id == job_id, j.state == RUNNING, j.lease_token == token)

    # -- enqueue ---------------------------------------------------------------

    def enqueue(self, jobs: Sequence[NewJob]) -> None:
        _check_unique(jobs)
        if not jobs:
            return
        if self._dialect == "sqlite":
            self._run_on_driver(self._insert_sql, self._insert_rows(jobs))
            return
        # PostgreSQL inserts any batch in one statement; PyMySQL's executemany may
        # split a large one into several, which must share a transaction.
        single = len(jobs) == 1 or self._dialect == "postgresql"
        self._run(lambda conn: self._insert(conn, jobs), single=single)

    def _run_on_driver(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """SQLite: ``executemany`` in one write transaction on the driver itself.

        Next to SQLite's one WAL flush, SQLAlchemy's execution machinery costs a
        fifth of an enqueue, so the hot path goes around it; errors are wrapped
        as SQLAlchemy's, and a busy database is retried as ``_run`` does.
        """
        import sqlite3

        for attempt in range(_RETRIES):
            try:
                with self._lock:
                    pooled = self.engine.raw_connection()
                    try:
                        db = pooled.driver_connection
                        assert db is not None
                        db.execute("BEGIN IMMEDIATE")
                        try:
                            db.executemany(sql, rows)
                            db.execute("COMMIT")
                        except BaseException:
                            if db.in_transaction:
                                db.execute("ROLLBACK")
                            raise
                    finally:
                        pooled.close()
                return
            except sqlite3.Error as exc:
                wrapped = DBAPIError.instance(sql, None, exc, sqlite3.Error)
                if isinstance(wrapped, IntegrityError):
                    raise ValueError("duplicate job id in enqueue batch") from wrapped
                transient = isinstance(wrapped, DBAPIError) and _transient(wrapped)
                if attempt == _RETRIES - 1 or not transient:
                    raise wrapped from exc
            time.sleep(random.uniform(0.001, 0.01) * 2**attempt)

    def enqueue_in(self, transaction: object, jobs: Sequence[NewJob]) -> None:
        """Insert ``jobs`` through the caller's ``Connection``, ``Session`` or ``Transaction``.

        They commit or roll back with it. A duplicate id raises ``ValueError``
        before anything is written, so the caller's transaction stays usable.
        """
        conn = _connection_of(transaction)
        if conn.dialect.name != self._dialect:
            raise ConfigurationError(
                f"enqueue_in got a {conn.dialect.name} connection, but this storage is on "
                f"{self._dialect}: pass a connection to the storage's own database"
            )
        _check_unique(jobs)
        if not jobs:
            return
        j = self._jobs.c
        for chunk in _chunks([job.id for job in jobs]):
            if conn.execute(select(j.id).where(j.id.in_(chunk)).limit(1)).first():
                raise ValueError("duplicate job id in enqueue batch")
        self._insert(conn, jobs)

    def _insert(self, conn: Connection, jobs: Sequence[NewJob]) -> None:
        """Insert waiting jobs with hand-written SQL: enqueue is the producers' hot path."""
        try:
            if self._dialect == "postgresql":
                self._insert_pg(conn, jobs)
                return
            rows = self._insert_rows(jobs)
            if len(rows) == 1:
                conn.exec_driver_sql(self._insert_sql, rows[0])
            else:
                # executemany inserts in list order, so seq follows the batch order.
                conn.exec_driver_sql(self._insert_sql, rows)
        except IntegrityError as exc:
            raise ValueError("duplicate job id in enqueue batch") from exc

    @staticmethod
    def _insert_rows(jobs: Sequence[NewJob]) -> list[tuple[Any, ...]]:
        """Parameters for ``_insert_sql``, one tuple per job."""
        return [
            (j.id, j.worker, j.payload, j.max_attempts, j.run_at, j.enqueued_at) + _FRESH
            for j in jobs
        ]

    def _insert_pg(self, conn: Connection, jobs: Sequence[NewJob]) -> None:
        """One statement, so in autocommit mode one round trip and one WAL flush.

        PostgreSQL hands out seq values before commit, so without a lock a
        concurrent enqueue could commit a lower seq after a higher one was claimed
        as a serial head. Per-worker advisory locks, taken before the first row
        draws its seq and held to commit, make each worker's seqs commit in order;
        the wake-up notification is delivered at commit.
        """
        params: dict[str, Any]
        if len(jobs) == 1:
            params = {c: getattr(jobs[0], c) for c in _INSERT_COLUMNS}
            params["keys"] = _lock_key(self.prefix, params["worker"])
            sql = self._pg_insert_one
        else:
            params = {c: [getattr(j, c) for j in jobs] for c in _INSERT_COLUMNS}
            params["keys"] = sorted({_lock_key(self.prefix, w) for w in params["worker"]})
            sql = self._pg_insert_many
        params["channel"] = self._channel
        conn.exec_driver_sql(sql, params)

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
        j = self._jobs.c
        lease = {
            "state": RUNNING,
            "attempt": j.attempt + 1,
            "lease_owner": owner,
            "lease_token": token,
            "lease_expires": lease_until,
        }

        def leased(record: JobRecord) -> JobRecord:
            # The row as the lease UPDATE left it, without reading it again.
            return replace(
                record,
                state=RUNNING,
                attempt=record.attempt + 1,
                lease_owner=owner,
                lease_token=token,
                lease_expires=lease_until,
            )

        def claim_serial(conn: Connection) -> list[JobRecord]:
            # Lock the head itself (no SKIP LOCKED): a second claimer waits for the
            # first to commit and then sees the head running, so never runs two.
            head = conn.execute(
                select(self._jobs)
                .where(j.worker == worker)
                .order_by(j.seq)
                .limit(1)
                .with_for_update()
            ).first()
            if head is None or head.state != WAITING or head.run_at > now:
                return []
            conn.execute(update(self._jobs).where(j.seq == head.seq).values(**lease))
            return [leased(_record(head))]

        def claim_many(conn: Connection) -> list[JobRecord]:
            if self._dialect == "postgresql":
                pick = (
                    select(j.seq)
                    .where(j.worker == worker, j.state == WAITING, j.run_at <= now)
                    .order_by(j.run_at, j.seq)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
                # One round trip; the CTE locks at most ``limit`` rows.
                locked = pick.cte("picked")
                stmt = (
                    update(self._jobs)
                    .where(j.seq == locked.c.seq)
                    .values(**lease)
                    .returning(*self._jobs.c)
                )
                rows = list(conn.execute(stmt))
            else:
                # No UPDATE ... RETURNING here: the locked rows are read whole and
                # the lease applied to them in Python, three round trips in all.
                picked = [
                    _record(r)
                    for r in conn.execute(
                        select(self._jobs)
                        .where(j.worker == worker, j.state == WAITING, j.run_at <= now)
                        .order_by(j.run_at, j.seq)
                        .limit(limit)
                        .with_for_update(skip_locked=True)
                    )
                ]
                if not picked:
                    return []
                seqs = [r.seq for r in picked]
                conn.execute(update(self._jobs).where(j.seq.in_(seqs)).values(**lease))
                return [leased(r) for r in picked]
            return sorted((_record(r) for r in rows), key=lambda r: (r.run_at, r.seq))

        if serial:
            return self._run(claim_serial, relaxed=True)
        return self._run(claim_many, relaxed=True, single=self._dialect == "postgresql")

    # -- transitions of a held job -----------------------------------------------

    def complete(self, job_id: str, token: str) -> bool:
        stmt = sql_delete(self._jobs).where(self._held(job_id, token))
        return self._run(lambda conn: conn.execute(stmt).rowcount == 1, relaxed=True, single=True)

    def complete_many(self, items: Sequence[tuple[str, str]]) -> list[str]:
        """Many successes in one transaction: one commit (one fsync) for the batch."""
        pairs = list(dict.fromkeys(items))
        j = self._jobs.c
        returning = self.engine.dialect.delete_returning

        def work(conn: Connection) -> list[str]:
            done: list[str] = []
            for start in range(0, len(pairs), _CHUNK):
                held = and_(
                    tuple_(j.id, j.lease_token).in_(pairs[start : start + _CHUNK]),
                    j.state == RUNNING,
                )
                if returning:
                    done += conn.scalars(sql_delete(self._jobs).where(held).returning(j.id))
                else:
                    found = list(conn.scalars(select(j.id).where(held).with_for_update()))
                    conn.execute(sql_delete(self._jobs).where(j.id.in_(found)))
                    done += found
            return done

        single = len(pairs) <= _CHUNK
        return self._run(work, relaxed=True, single=single) if pairs else []

    def schedule_retry(self, job_id: str, token: str, *, run_at: float, error: str) -> bool:
        return self._fail(job_id, token, error, state=WAITING, run_at=run_at)

    def bury(self, job_id: str, token: str, *, error: str) -> bool:
        return self._fail(job_id, token, error, state=DEAD)

    def _fail(self, job_id: str, token: str, error: str, **values: Any) -> bool:
        held = self._held(job_id, token)

        def work(conn: Connection) -> bool:
            found = conn.scalar(select(self._jobs.c.errors).where(held).with_for_update())
            if found is None:
                return False
            errors = json.dumps([*json.loads(found), error])
            conn.execute(
                update(self._jobs).where(held).values(errors=errors, **_UNLEASED, **values)
            )
            if values["state"] == WAITING:
                self._notify(conn)
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
            self._notify(conn)
            return True

        return self._run(work)

    def extend(self, token: str, job_ids: Sequence[str], lease_until: float) -> list[str]:
        j = self._jobs.c
        wanted = list(dict.fromkeys(job_ids))

        def work(conn: Connection) -> set[str]:
            done: set[str] = set()
            for chunk in _chunks(wanted):
                held = and_(j.id.in_(chunk), j.state == RUNNING, j.lease_token == token)
                stmt = update(self._jobs).where(held).values(lease_expires=lease_until)
                if conn.dialect.update_returning:
                    done.update(conn.scalars(stmt.returning(j.id)))
                else:
                    conn.execute(stmt)
                    # The rows just updated stay locked by us until commit.
                    done.update(conn.scalars(select(j.id).where(held)))
            return done

        single = len(wanted) <= _CHUNK
        done = self._run(work, relaxed=True, single=single) if wanted else set()
        return [job_id for job_id in job_ids if job_id in done]

    def recover(self, now: float, *, owner: str | None = None, error: str) -> Recovered:
        j = self._jobs.c
        mine = j.lease_owner == owner if owner is not None else false()

        def work(conn: Connection) -> Recovered:
            # SKIP LOCKED: a row locked right now is being touched by its holder;
            # the next recovery pass sees it.
            lost = conn.execute(
                select(j.seq, j.id, j.attempt, j.max_attempts, j.errors)
                .where(j.state == RUNNING, or_(j.lease_expires <= now, mine))
                .order_by(j.seq)
                .with_for_update(skip_locked=True)
            ).all()
            waiting = [r for r in lost if r.attempt < r.max_attempts]
            dead = [r for r in lost if r.attempt >= r.max_attempts]
            for rows, values in (
                (waiting, {"state": WAITING, "run_at": now}),
                (dead, {"state": DEAD}),
            ):
                if rows:
                    stmt = update(self._jobs).where(j.seq == bindparam("b_seq"))
                    conn.execute(
                        stmt.values(errors=bindparam("b_errors"), **_UNLEASED, **values),
                        [
                            {"b_seq": r.seq, "b_errors": json.dumps([*json.loads(r.errors), error])}
                            for r in rows
                        ],
                    )
            if waiting:
                self._notify(conn)
            return Recovered(waiting=tuple(r.id for r in waiting), dead=tuple(r.id for r in dead))

        return self._run(work)

    # -- reading -----------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        stmt = select(self._jobs).where(self._jobs.c.id == job_id)
        row = self._run(lambda conn: conn.execute(stmt).first(), read=True)
        return None if row is None else _record(row)

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        worker: str | None = None,
        limit: int = 100,
        after_seq: int | None = None,
    ) -> list[JobRecord]:
        if limit <= 0:
            return []
        j = self._jobs.c
        stmt = select(self._jobs).order_by(j.seq).limit(limit)
        if state is not None:
            stmt = stmt.where(j.state == state)
        if worker is not None:
            stmt = stmt.where(j.worker == worker)
        if after_seq is not None:
            stmt = stmt.where(j.seq > after_seq)
        rows = self._run(lambda conn: conn.execute(stmt).all(), read=True)
        return [_record(r) for r in rows]

    def counts(self, now: float) -> dict[str, Counts]:
        j = self._jobs.c
        due = func.sum(case((j.run_at <= now, 1), else_=0))
        stmt = select(j.worker, j.state, func.count(), due).group_by(j.worker, j.state)
        tally: dict[str, dict[str, int]] = {}
        for worker, state, total, runnable in self._run(
            lambda conn: conn.execute(stmt).all(), read=True
        ):
            row = tally.setdefault(worker, {})
            if state == WAITING:
                row["waiting"] = int(runnable)
                row["scheduled"] = int(total) - int(runnable)
            else:
                row[state] = int(total)
        return {worker: Counts(**row) for worker, row in tally.items()}

    # -- manual operations -------------------------------------------------------

    def delete(self, job_id: str) -> DeleteResult:
        j = self._jobs.c

        def work(conn: Connection) -> DeleteResult:
            state = conn.scalar(select(j.state).where(j.id == job_id).with_for_update())
            if state is None:
                return "missing"
            if state == RUNNING:
                return "running"
            conn.execute(sql_delete(self._jobs).where(j.id == job_id))
            return "deleted"

        return self._run(work)

    def requeue(self, job_id: str, new_id: str, *, now: float) -> RequeueResult:
        j = self._jobs.c

        def work(conn: Connection) -> RequeueResult:
            state = conn.scalar(select(j.state).where(j.id == job_id).with_for_update())
            if state is None:
                return "missing"
            if state != DEAD:
                return "not_dead"
            if conn.scalar(select(j.seq).where(j.id == new_id)) is not None:
                raise ValueError(f"job id {new_id!r} already exists")
            try:
                conn.execute(
                    update(self._jobs)
                    .where(j.id == job_id)
                    .values(id=new_id, state=WAITING, attempt=0, run_at=now, errors="[]")
                )
            except IntegrityError as exc:
                raise ValueError(f"job id {new_id!r} already exists") from exc
            self._notify(conn)
            return "requeued"

        return self._run(work)

    # -- wake-ups (PostgreSQL) -----------------------------------------------------

    def wait_for_jobs(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for a NOTIFY from enqueue/retry/release/requeue.

        One thread at a time reads the LISTEN connection and wakes the others.
        Notifications between calls are kept, so none is lost. The first call
        (which starts listening) and the first call after the connection was
        lost and is back return True at once: what was sent meanwhile is unseen.
        """
        if self._dialect != "postgresql":
            raise NotImplementedError("wait_for_jobs needs PostgreSQL (LISTEN/NOTIFY)")
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
                        self._drop_listener()
                    self._wake.notify_all()

    def _listen(self, timeout: float) -> bool:
        import psycopg
        from psycopg import sql

        if self._listener is None:
            try:
                cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
                conn = psycopg.connect(*cargs, autocommit=True, **cparams)
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            except psycopg.OperationalError:
                time.sleep(timeout)  # the server is away: wait, do not spin
                return False
            self._listener = conn
            if self._listener_lost:
                self._listener_lost = False
                return True
        try:
            woken = any(True for _ in self._listener.notifies(timeout=timeout, stop_after=1))
            if woken:
                # Several notifications often arrive together: one wake-up covers them.
                for _ in self._listener.notifies(timeout=0):
                    pass
            return woken
        except psycopg.OperationalError:
            self._drop_listener()
            self._listener_lost = True
            return False

    def _drop_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                self._listener.close()
            self._listener = None

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._signal += 1
            if not self._listening:
                self._drop_listener()
            self._wake.notify_all()
        self.engine.dispose()
        for extra in (self._relaxed_engine, self._autocommit_engine):
            if extra is not None:
                extra.dispose()


# -- helpers --------------------------------------------------------------------

_INSERT_COLUMNS = ("id", "worker", "payload", "max_attempts", "run_at", "enqueued_at")
_FRESH = (WAITING, 0, "[]")  # state, attempt and errors of a new job
_UNLEASED: dict[str, Any] = {"lease_owner": None, "lease_token": None, "lease_expires": None}


def _pg_insert_sql(engine: Engine, table: str, *, batch: bool) -> str:
    """The PostgreSQL enqueue: locks, notification and rows in one statement.

    A batch comes as one array per column, so its statement text is the same for
    every batch size; a single job comes as scalars, cheaper to send. The lock
    CTE is an aggregate: its single row, needed by every inserted row, exists
    only once all locks are held, so no row draws a seq before that; ``ORDER BY
    ord`` gives seqs in batch order.
    """
    name = engine.dialect.identifier_preparer.quote(table)
    columns = "r(id, worker, payload, max_attempts, run_at, enqueued_at, ord)"
    if batch:
        keys = "unnest(%(keys)s::bigint[]) AS k"
        rows = (
            "unnest(%(id)s::text[], %(worker)s::text[], %(payload)s::bytea[], "
            "%(max_attempts)s::int[], %(run_at)s::float8[], %(enqueued_at)s::float8[]"
            f") WITH ORDINALITY AS {columns}"
        )
    else:
        keys = "(VALUES (%(keys)s::bigint)) AS l(k)"
        rows = (
            "(VALUES (%(id)s::text, %(worker)s::text, %(payload)s::bytea, "
            "%(max_attempts)s::int, %(run_at)s::float8, %(enqueued_at)s::float8, 1)"
            f") AS {columns}"
        )
    return (
        f"WITH locks AS MATERIALIZED (SELECT count(pg_advisory_xact_lock(k)) AS n FROM {keys}), "
        "wake AS MATERIALIZED (SELECT pg_notify(%(channel)s, '')) "
        f"INSERT INTO {name} "
        "(id, worker, payload, state, attempt, max_attempts, run_at, enqueued_at, errors) "
        f"SELECT r.id, r.worker, r.payload, '{WAITING}', 0, r.max_attempts, r.run_at, "
        f"r.enqueued_at, '[]' FROM locks, wake, {rows} ORDER BY r.ord"
    )


def _check_unique(jobs: Sequence[NewJob]) -> None:
    if len({job.id for job in jobs}) != len(jobs):
        raise ValueError("duplicate job id in enqueue batch")


def _insert_sql(engine: Engine, table: str) -> str:
    """INSERT of one waiting job in the driver's own placeholder style.

    Placeholders only, constants too: PyMySQL turns an executemany into one
    multi-row INSERT only when the VALUES list holds nothing else.
    """
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    name = engine.dialect.identifier_preparer.quote(table)
    columns = (*_INSERT_COLUMNS, "state", "attempt", "errors")
    return (
        f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
    )


def _record(row: Row[Any]) -> JobRecord:
    m = row._mapping
    return JobRecord(
        id=m["id"],
        seq=int(m["seq"]),
        worker=m["worker"],
        payload=bytes(m["payload"]),
        state=cast(JobState, m["state"]),
        attempt=int(m["attempt"]),
        max_attempts=int(m["max_attempts"]),
        run_at=float(m["run_at"]),
        enqueued_at=float(m["enqueued_at"]),
        errors=tuple(json.loads(m["errors"])),
        lease_owner=m["lease_owner"],
        lease_token=m["lease_token"],
        lease_expires=None if m["lease_expires"] is None else float(m["lease_expires"]),
    )


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _lock_key(prefix: str, name: str) -> int:
    digest = hashlib.blake2b(f"{prefix}\0{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _transient(exc: DBAPIError) -> bool:
    """A deadlock, serialization failure or busy database: safe to run again."""
    if exc.connection_invalidated:
        return False
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in ("40001", "40P01"):
        return True
    args = getattr(orig, "args", ())
    if args and args[0] in (1205, 1213):  # lock wait timeout, deadlock
        return True
    return "database is locked" in str(orig)


def _connection_of(transaction: object) -> Connection:
    if isinstance(transaction, Connection):
        return transaction
    from sqlalchemy.engine import Transaction
    from sqlalchemy.orm import Session

    if isinstance(transaction, Session):
        return transaction.connection()
    if isinstance(transaction, Transaction):
        return transaction.connection
    raise TypeError(
        "enqueue_in needs a SQLAlchemy Connection, Transaction or Session, "
        f"not {type(transaction).__name__}"
    )


def _install_sqlite_hooks(engine: Engine) -> None:
    """WAL, a busy timeout, and BEGIN IMMEDIATE for every write transaction.

    pysqlite would otherwise BEGIN lazily (deferred): two processes could both
    read the same waiting job before either upgrades to the write lock. Taking
    the write lock at BEGIN makes each claim a serial read-then-update.
    """
    if getattr(engine, "_exqueue_hooks", False):
        return

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # FULL: a job is on disk when enqueue returns, even across power loss.
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        read = conn.get_execution_options().get("exqueue_read", False)
        # Straight to the driver: an exec_driver_sql here costs as much as the insert.
        conn.connection.driver_connection.execute("BEGIN" if read else "BEGIN IMMEDIATE")  # type: ignore[union-attr]

    engine._exqueue_hooks = True  # type: ignore[attr-defined]
