"""SQLStorage's cluster-wide limits and pause (capabilities ``LIMITS`` and ``PAUSE``).

Two tables join the jobs table's ``MetaData`` (:func:`limit_tables`):

* ``{prefix}worker_control``: one row per worker type that was ever paused or
  claimed with limits: ``paused`` (0/1). On MariaDB/MySQL the row is also the
  type's *lock row*: a limited claim locks it (``SELECT ... FOR UPDATE``) first,
  so the limited claims of one type run one after the other across processes.
* ``{prefix}starts``: one row per claim of a rate-limited type (worker, bucket,
  time), counted over ``(now - per, now]``; older rows are pruned.

A slot is a running job, so the running count is read from the jobs table
itself (``state = 'running'`` per partition): every transition that ends a
running job frees its slot in its own transaction, recovery included, and
nothing else needs to be kept in step.

A limited claim serializes the type's claims, then picks in one statement: the
runnable jobs numbered per bucket (``ROW_NUMBER() OVER (PARTITION BY
partition_key ORDER BY priority, run_at, seq)``), joined with the running count
and the starts in the window per bucket, keeping those whose number still fits,
in ``(priority, run_at, seq)`` order. A full partition's jobs are passed over
and the jobs of other partitions behind them are taken.

* PostgreSQL: one round trip. A transaction-scoped advisory lock on the type,
  then the pick, the lease UPDATE ... RETURNING and the starts INSERT as one
  CTE, sent as one simple-query text (two statements, values inlined by
  psycopg's client-side quoting) on the autocommit pool: PostgreSQL runs them
  as one implicit transaction, each statement with a fresh snapshot (READ
  COMMITTED), so the pick sees every claim that committed before the lock.
  One statement could not be exact: its snapshot is taken before it waits.
* MariaDB/MySQL: one transaction (READ COMMITTED, as exqueue opens it): the
  lock row (which also says whether the type is paused), the pick with
  ``FOR UPDATE SKIP LOCKED``, the lease UPDATE, and with a rate the starts
  INSERT. That is one statement more than an unlimited claim (two with a rate).
* SQLite: every write transaction holds the database's write lock from BEGIN,
  which serializes the claims: the pick, the UPDATE and (with a rate) the
  starts INSERT.

Pause is a check inside the claim's own statement (``NOT EXISTS`` on
``worker_control``, see ``_dialect.runnable``), so unlimited claims honour it too.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    select,
    update,
)
from sqlalchemy import delete as sql_delete
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.types import Integer as SQLInteger

from exqueue.storage import (
    DEAD,
    PARTITION_KEY_LIMIT,
    RUNNING,
    JobRecord,
    LimitedClaim,
    NewJob,
    clip_error,
)
from exqueue_sql._records import Damaged, DictRow, parse

if TYPE_CHECKING:
    from exqueue_sql._dialect import Dialect
    from exqueue_sql._runner import Runner

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
_ID = BigInteger().with_variant(SQLInteger(), "sqlite")
#: The most runnable jobs a partitioned limited claim looks at, in claim order (those of
#: full partitions are passed over); as Redis's ``SCAN_LIMIT``.
SCAN_LIMIT = 5000
#: Starts rows of a type are pruned at most this often per process (seconds), unless
#: the dialect prunes in the claim statement itself (PostgreSQL).
_PRUNE_EVERY = 5.0


def limit_tables(prefix: str, metadata: MetaData, options: dict[str, Any]) -> None:
    """The worker control and starts tables of ``prefix``, added to ``metadata``."""
    Table(
        f"{prefix}worker_control",
        metadata,
        Column("worker", String(255), primary_key=True),
        Column("paused", Integer, nullable=False, server_default="0"),
        **options,
    )
    Table(
        f"{prefix}starts",
        metadata,
        Column("id", _ID, primary_key=True, autoincrement=True),
        Column("worker", String(255), nullable=False),
        # The job's partition_key when the type's limits are partitioned, else NULL.
        Column("bucket", String(255)),
        Column("at", Double, nullable=False),
        # Counting a type's window and pruning it: a range scan on (worker, at).
        Index(f"{prefix}starts_window", "worker", "at"),
        **options,
    )


def create_limit_tables(conn: Connection, metadata: MetaData, prefix: str) -> None:
    """Create the tables in a store made before they existed (a no-op otherwise)."""
    for name in ("worker_control", "starts"):
        metadata.tables[f"{prefix}{name}"].create(conn, checkfirst=True)


def check_jobs(jobs: Sequence[NewJob]) -> None:
    """Refuse a partition key the columns cannot hold, before anything is written."""
    for job in jobs:
        part = job.partition
        if part is None:
            continue
        if not isinstance(part, str):
            raise ValueError(f"job {job.id!r}: partition must be a str or None, not {part!r}")
        if len(part.encode("utf-8", "surrogatepass")) > PARTITION_KEY_LIMIT:
            raise ValueError(
                f"job {job.id!r}: partition takes at most {PARTITION_KEY_LIMIT} UTF-8 bytes "
                "(the core hashes longer keys); nothing was stored"
            )


def has_dead(jobs: Sequence[NewJob]) -> bool:
    return any(job.dead_error is not None for job in jobs)


def without_unique(jobs: Sequence[NewJob]) -> list[NewJob]:
    """A job stored dead holds no unique key."""
    return [replace(j, unique=None) if j.dead_error is not None else j for j in jobs]


def bury_new(conn: Connection, jobs_table: Table, jobs: Sequence[NewJob]) -> None:
    """Make the just-inserted jobs that carry a ``dead_error`` dead with it, in the
    inserting transaction (so no claim ever sees them waiting)."""
    j = jobs_table.c
    for job in jobs:
        if job.dead_error is None:
            continue
        conn.execute(
            update(jobs_table)
            .where(j.id == job.id)
            .values(state=DEAD, errors=json.dumps([clip_error(job.dead_error)]), error_count=1)
        )


def lock_key(prefix: str, worker: str) -> int:
    """The PostgreSQL advisory lock of a limited type (not the enqueue's per-worker one)."""
    digest = hashlib.blake2b(f"{prefix}\0limits\0{worker}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class LimitSQL:
    """The text of a limited claim's pick for one dialect and one shape of limits."""

    def __init__(self, dialect_name: str, prefix: str, quote: Any) -> None:
        self.name = dialect_name
        self.jobs = quote(f"{prefix}jobs")
        self.starts = quote(f"{prefix}starts")
        self.control = quote(f"{prefix}worker_control")
        self.eq = {"postgresql": "IS NOT DISTINCT FROM", "sqlite": "IS"}.get(dialect_name, "<=>")

    def pick(
        self, request: LimitedClaim, *, pause_check: bool, lock: bool, rows: bool = False
    ) -> str:
        """A SELECT of the seqs to claim, with named parameters ``w n now conc rate since``.

        ``lock``: of the whole rows, locked (``FOR UPDATE SKIP LOCKED``); ``rows``: of the
        whole rows, not locked (SQLite, whose write lock covers the transaction).
        """
        lim = request.limits
        parted = lim.partitioned
        bucket = "partition_key" if parted else "0"
        join = f"{self.eq} c.bk" if parted else "= c.bk"
        window = "PARTITION BY partition_key " if parted else ""
        # Unpartitioned, no job past the first n can be taken: the index scan stops there.
        # Partitioned, the jobs of full partitions are passed over, up to SCAN_LIMIT of them.
        cap = f" ORDER BY priority, run_at, seq LIMIT {SCAN_LIMIT if parted else ':n'}"
        paused = (
            f" AND NOT EXISTS (SELECT 1 FROM {self.control} WHERE worker = :w AND paused <> 0)"
            if pause_check
            else ""
        )
        ctes = [
            f"cand AS (SELECT seq, priority, run_at, bk, ROW_NUMBER() OVER "
            f"({window}ORDER BY priority, run_at, seq) AS rn FROM (SELECT seq, priority, "
            f"run_at, {bucket} AS bk, partition_key FROM {self.jobs} WHERE worker = :w "
            f"AND state = 'waiting' AND run_at <= :now "
            f"AND (expires_at IS NULL OR expires_at > :now){paused}{cap}) AS r)"
        ]
        joins, conds = [], []
        if lim.concurrency is not None:
            group = " GROUP BY partition_key" if parted else ""
            ctes.append(
                f"used AS (SELECT {bucket} AS bk, COUNT(*) AS n FROM {self.jobs} "
                f"WHERE worker = :w AND state = 'running'{group})"
            )
            joins.append(f" LEFT JOIN used u ON u.bk {join}")
            conds.append("c.rn + COALESCE(u.n, 0) <= :conc")
        if lim.rate is not None:
            sbucket, group = ("bucket", " GROUP BY bucket") if parted else ("0", "")
            ctes.append(
                f"started AS (SELECT {sbucket} AS bk, COUNT(*) AS n FROM {self.starts} "
                f"WHERE worker = :w AND at > :since{group})"
            )
            joins.append(f" LEFT JOIN started s ON s.bk {join}")
            conds.append("c.rn + COALESCE(s.n, 0) <= :rate")
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        sql = (
            f"WITH {', '.join(ctes)} SELECT c.seq FROM cand c{''.join(joins)}{where} "
            "ORDER BY c.priority, c.run_at, c.seq LIMIT :n"
        )
        if not (lock or rows):
            return sql
        # The window cannot sit in a locking query: the rows are locked by seq outside it.
        return (
            f"SELECT j.* FROM {self.jobs} j JOIN ({sql}) p ON p.seq = j.seq "
            "ORDER BY j.priority, j.run_at, j.seq" + (" FOR UPDATE SKIP LOCKED" if lock else "")
        )


def params(request: LimitedClaim) -> dict[str, Any]:
    lim = request.limits
    per = lim.per if lim.per is not None else 0.0
    return {
        "w": request.worker,
        "n": int(request.limit),
        "now": float(request.now),
        "conc": lim.concurrency,
        "rate": lim.rate,
        "since": float(request.now) - float(per),
    }


def check_request(request: LimitedClaim) -> None:
    lim = request.limits
    for name in ("concurrency", "rate"):
        value = getattr(lim, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"limits.{name} must be an int or None, not {value!r}")
        if value is not None and value <= 0:
            raise ValueError(f"limits.{name} must be above 0, not {value!r}")
    if (lim.rate is None) != (lim.per is None):
        raise ValueError("limits.rate and limits.per go together")
    if lim.per is not None and not (isinstance(lim.per, int | float) and lim.per > 0):
        raise ValueError(f"limits.per must be a number of seconds above 0, not {lim.per!r}")


class SQLLimits:
    """The limited claim, pause and enqueue-side fields of ``SQLStorage`` (a base class)."""

    prefix: str
    engine: Any
    _jobs: Table
    _dialect: Dialect
    _runner: Runner

    def _good(self, conn: Connection, found: Sequence[JobRecord | Damaged]) -> list[JobRecord]:
        raise NotImplementedError

    @property
    def _worker_control(self) -> Table:
        return self._jobs.metadata.tables[f"{self.prefix}worker_control"]

    @property
    def _starts(self) -> Table:
        return self._jobs.metadata.tables[f"{self.prefix}starts"]

    def _limit_sql(self) -> LimitSQL:
        found: LimitSQL | None = getattr(self, "_limit_sql_cache", None)
        if found is None:
            prep = self.engine.dialect.identifier_preparer
            found = LimitSQL(self.engine.dialect.name, self.prefix, prep.quote)
            self._limit_sql_cache = found
        return found

    # -- pause -------------------------------------------------------------------

    def pause(self, worker: str, paused: bool) -> None:
        if not isinstance(worker, str) or not worker:
            raise ValueError(f"a worker name must be a non-empty string, not {worker!r}")
        table = self._worker_control
        c = table.c

        def work(conn: Connection) -> None:
            self._ensure_control_row(conn, worker)
            conn.execute(update(table).where(c.worker == worker).values(paused=int(paused)))

        self._runner.run(work)

    def paused(self) -> frozenset[str]:
        c = self._worker_control.c
        stmt = select(c.worker).where(c.paused != 0)
        return frozenset(self._runner.run(lambda conn: list(conn.scalars(stmt)), read=True))

    def _ensure_control_row(self, conn: Connection, worker: str) -> None:
        table = self._worker_control
        name = conn.dialect.name
        row = {"worker": worker, "paused": 0}
        if name == "postgresql":
            conn.execute(pg_insert(table).values(row).on_conflict_do_nothing())
        elif name == "sqlite":
            conn.execute(sqlite_insert(table).values(row).on_conflict_do_nothing())
        elif name in ("mysql", "mariadb"):
            conn.execute(mysql_insert(table).values(row).prefix_with("IGNORE"))
        elif conn.execute(select(table.c.worker).where(table.c.worker == worker)).first() is None:
            conn.execute(table.insert().values(row))

    # -- the limited claim ---------------------------------------------------------

    def claim_limited(self, request: LimitedClaim) -> list[JobRecord]:
        check_request(request)
        if request.limit <= 0:
            return []
        name = self.engine.dialect.name
        if name == "postgresql":
            return self._claim_limited_pg(request)
        if name in ("mysql", "mariadb") and self.engine.dialect.driver == "pymysql":
            # Other drivers (an engine passed in) take the portable transaction below.
            from exqueue_sql import _limits_mysql

            rate = request.limits.rate is not None
            prune = rate and self._due_for_prune(request.worker, request.now)
            return _limits_mysql.claim(self, self._limit_sql(), request, params(request), prune)
        return self._claim_limited_tx(request, lock_row=name != "sqlite")

    def _close_limits(self) -> None:
        from exqueue_sql import _limits_mysql

        _limits_mysql.close(self)

    def _claim_limited_tx(self, request: LimitedClaim, *, lock_row: bool) -> list[JobRecord]:
        """MariaDB/MySQL (lock row) and SQLite (the write lock): one transaction."""
        sql = self._limit_sql()
        c = self._worker_control.c
        j = self._jobs.c
        lock_stmt = select(c.paused).where(c.worker == request.worker).with_for_update()
        pick = sql.pick(request, pause_check=not lock_row, lock=lock_row, rows=True)
        args = params(request)
        rate = request.limits.rate is not None
        prune = rate and self._due_for_prune(request.worker, request.now)

        def work(conn: Connection) -> list[JobRecord]:
            if lock_row:
                paused = conn.scalar(lock_stmt)
                if paused is None:
                    self._ensure_control_row(conn, request.worker)
                    paused = conn.scalar(lock_stmt)
                if paused:
                    return []
            found = [parse(r) for r in conn.execute(_text(pick), args)]
            if not found:
                return []
            good = [r for r in found if isinstance(r, JobRecord)]
            if good:
                conn.execute(
                    update(self._jobs)
                    .where(j.seq.in_([r.seq for r in good]))
                    .values(
                        state=RUNNING,
                        attempt=j.attempt + 1,
                        lease_owner=request.owner,
                        lease_token=request.token,
                        lease_expires=request.lease_until,
                    )
                )
                if rate:
                    self._record_starts(conn, request, good)
            if prune:
                self._prune_starts(conn, request)
            claimed = [
                replace(
                    r,
                    state=RUNNING,
                    attempt=r.attempt + 1,
                    lease_owner=request.owner,
                    lease_token=request.token,
                    lease_expires=request.lease_until,
                )
                for r in good
            ]
            claimed.sort(key=lambda r: (r.priority, r.run_at, r.seq))
            self._good(conn, [r for r in found if isinstance(r, Damaged)])
            return claimed

        return self._runner.run(work, relaxed=True)

    def _record_starts(
        self, conn: Connection, request: LimitedClaim, claimed: Sequence[JobRecord]
    ) -> None:
        # One executemany; SQLite runs it in process.
        parted = request.limits.partitioned
        conn.execute(
            self._starts.insert(),
            [
                {"worker": request.worker, "bucket": r.partition if parted else None,
                 "at": request.now}
                for r in claimed
            ],
        )  # fmt: skip

    def _due_for_prune(self, worker: str, now: float) -> bool:
        last: dict[str, float] = self.__dict__.setdefault("_starts_pruned", {})
        mono = time.monotonic()
        if mono - last.get(worker, -1e18) < _PRUNE_EVERY:
            return False
        last[worker] = mono
        return True

    def _prune_starts(self, conn: Connection, request: LimitedClaim) -> None:
        s = self._starts.c
        since = params(request)["since"]
        conn.execute(sql_delete(self._starts).where(s.worker == request.worker, s.at <= since))

    def _claim_limited_pg(self, request: LimitedClaim) -> list[JobRecord]:
        """One round trip: the advisory lock, then the pick/lease/starts CTE (see above)."""
        import psycopg

        sql = self._limit_sql()
        pick = sql.pick(request, pause_check=True, lock=False)
        rate = request.limits.rate is not None
        parted = request.limits.partitioned
        tail = ""
        if rate:
            bucket = "partition_key" if parted else "NULL"
            tail = (
                f", ins AS (INSERT INTO {sql.starts} (worker, bucket, at) "
                f"SELECT worker, {bucket}, :now FROM upd), "
                f"pruned AS (DELETE FROM {sql.starts} WHERE worker = :w AND at <= :since)"
            )
        body = (
            f"WITH picked AS MATERIALIZED ({pick}), "
            f"locked AS MATERIALIZED (SELECT seq FROM {sql.jobs} "
            f"WHERE seq IN (SELECT seq FROM picked) FOR UPDATE SKIP LOCKED), "
            f"upd AS (UPDATE {sql.jobs} SET state = 'running', attempt = attempt + 1, "
            f"lease_owner = :owner, lease_token = :token, lease_expires = :until "
            f"FROM locked WHERE {sql.jobs}.seq = locked.seq RETURNING {sql.jobs}.*){tail} "
            "SELECT * FROM upd"
        )
        args = params(request)
        args.update(
            owner=request.owner,
            token=request.token,
            until=float(request.lease_until),
            key=lock_key(self.prefix, request.worker),
        )
        text = f"SELECT pg_advisory_xact_lock(:key); {body}"
        # :name -> %(name)s for psycopg's client-side quoting (no '%' elsewhere in the text).
        for key in sorted(args, key=len, reverse=True):
            text = text.replace(f":{key}", f"%({key})s")

        def work(conn: Connection) -> list[JobRecord]:
            driver = conn.connection.driver_connection
            literal = psycopg.ClientCursor(driver).mogrify(text, args)  # type: ignore[arg-type]
            # Through SQLAlchemy (its events see it); psycopg turns each %% back into %.
            result = conn.exec_driver_sql(literal.replace("%", "%%"))
            cursor = result.cursor
            assert cursor is not None
            cursor.nextset()  # past the lock's row: the claimed rows
            names = [d[0] for d in cursor.description or ()]
            found = [parse(DictRow(names, row)) for row in cursor.fetchall()]
            result.close()
            good = sorted(
                (r for r in found if isinstance(r, JobRecord)),
                key=lambda r: (r.priority, r.run_at, r.seq),
            )
            return good + self._good(conn, [r for r in found if isinstance(r, Damaged)])

        return self._runner.run(work, relaxed=True, single=True)


def _text(sql: str) -> Any:
    from sqlalchemy import text

    return text(sql)
