"""The limited claim on MariaDB/MySQL: two multi-statement round trips and the COMMIT.

An unlimited claim there is a ``SELECT ... FOR UPDATE SKIP LOCKED``, an
``UPDATE`` and the ``COMMIT``: three round trips. The limited claim takes the
same three, on a small pool of its own whose connections allow several
statements per round trip (PyMySQL's ``CLIENT.MULTI_STATEMENTS``) and run READ
COMMITTED:

1. the type's lock row (``SELECT paused ... FOR UPDATE``), then the pick
   (``_limits.LimitSQL.pick``) locking the jobs it takes; the server runs them in
   order, so the pick, a statement of its own with a fresh read view, sees every
   claim of the type that committed before the lock was granted;
2. the lease ``UPDATE`` and, with a rate, the starts ``INSERT`` (and now and then
   the pruning of old starts);
3. ``COMMIT``, which releases the lock row.

Values are inlined with PyMySQL's own quoting (``cursor.mogrify``), as PyMySQL
does for every statement it sends.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine

from exqueue.storage import RUNNING, JobRecord, LimitedClaim
from exqueue_sql._records import Damaged, DictRow, parse

if TYPE_CHECKING:
    from exqueue_sql._limits import LimitSQL

_CREATE = threading.Lock()


def multi_engine(engine: Engine, timeouts: Any) -> Engine:
    """A READ COMMITTED pool on ``engine``'s database allowing several statements per call."""
    from pymysql.constants import CLIENT

    from exqueue_sql._mysql import _install_timeouts
    from exqueue_sql._urls import ping_when_idle

    multi = create_engine(
        engine.url,
        isolation_level="READ COMMITTED",
        # FOUND_ROWS as SQLAlchemy sets it (rowcount = rows matched), plus several statements.
        connect_args={"client_flag": CLIENT.MULTI_STATEMENTS | CLIENT.FOUND_ROWS},
        pool_size=2,
    )
    ping_when_idle(multi)
    if timeouts is not None:
        _install_timeouts(multi, timeouts)
    return multi


def engine_of(storage: Any) -> Engine:
    found: Engine | None = storage.__dict__.get("_multi_engine")
    if found is None:
        with _CREATE:
            found = storage.__dict__.get("_multi_engine")
            if found is None:
                found = multi_engine(storage.engine, storage._dialect.timeouts)
                storage._multi_engine = found
    return found


def _run(conn: Connection, text: str) -> list[tuple[list[str], list[Any]]]:
    """Send ``text`` (statements with values inlined) in one round trip; each result set."""
    # Sent through SQLAlchemy (so its events see it) without parameters; PyMySQL then
    # still applies %-formatting to the text, which turns each %% back into %.
    result = conn.exec_driver_sql(text.replace("%", "%%"))
    cursor = result.cursor
    assert cursor is not None
    sets: list[tuple[list[str], list[Any]]] = []
    while True:
        names = [d[0] for d in cursor.description or ()]
        sets.append((names, list(cursor.fetchall()) if names else []))
        if not cursor.nextset():
            break
    result.close()
    return sets


def claim(
    storage: Any, sql: LimitSQL, request: LimitedClaim, args: dict[str, Any], prune: bool
) -> list[JobRecord]:
    """The limited claim of ``storage`` (an ``SQLStorage`` on MariaDB/MySQL)."""
    from exqueue_sql._runner import Runner

    lock = f"SELECT paused FROM {sql.control} WHERE worker = %(w)s FOR UPDATE"
    pick = _named(sql.pick(request, pause_check=True, lock=True))
    rate = request.limits.rate is not None
    parted = request.limits.partitioned

    def work(conn: Connection) -> list[JobRecord]:
        mogrify = conn.connection.driver_connection.cursor().mogrify  # type: ignore[union-attr]
        sets = _run(conn, mogrify(f"{lock}; {pick}", args))
        if not sets[0][1]:
            # The type's first limited claim: its lock row is made, and the claim runs again.
            storage._ensure_control_row(conn, request.worker)
            sets = _run(conn, mogrify(f"{lock}; {pick}", args))
        if sets[0][1][0][0]:
            return []  # paused
        names, rows = sets[1]
        found: Sequence[JobRecord | Damaged] = [parse(DictRow(names, r)) for r in rows]
        good = [r for r in found if isinstance(r, JobRecord)]
        writes: list[str] = []
        if good:
            seqs = ", ".join(str(int(r.seq)) for r in good)
            writes.append(
                mogrify(
                    f"UPDATE {sql.jobs} SET state = 'running', attempt = attempt + 1, "
                    "lease_owner = %(owner)s, lease_token = %(token)s, "
                    f"lease_expires = %(until)s WHERE seq IN ({seqs})",
                    {
                        "owner": request.owner,
                        "token": request.token,
                        "until": float(request.lease_until),
                    },
                )  # fmt: skip
            )
            if rate:
                values = ", ".join(
                    mogrify(
                        "(%s, %s, %s)",
                        (request.worker, r.partition if parted else None, float(request.now)),
                    )  # fmt: skip
                    for r in good
                )
                writes.append(f"INSERT INTO {sql.starts} (worker, bucket, at) VALUES {values}")
        if prune:
            writes.append(
                mogrify(f"DELETE FROM {sql.starts} WHERE worker = %(w)s AND at <= %(since)s", args)
            )
        if writes:
            # A first statement with rows keeps the cursor open through SQLAlchemy, so
            # each later result (and any error in it) is read here, not dropped at close.
            _run(conn, "; ".join(["SELECT 1 AS ok", *writes]))
        claimed = [
            replace(r, state=RUNNING, attempt=r.attempt + 1, lease_owner=request.owner,
                    lease_token=request.token, lease_expires=request.lease_until)
            for r in good
        ]  # fmt: skip
        claimed.sort(key=lambda r: (r.priority, r.run_at, r.seq))
        damaged = [r for r in found if isinstance(r, Damaged)]
        if damaged:
            storage._good(conn, damaged)
        return claimed

    return Runner(engine_of(storage), storage._dialect).run(work, relaxed=True)


def _named(text: str) -> str:
    """``:name`` parameters (SQLAlchemy's) as ``%(name)s`` (PyMySQL's)."""
    for key in ("since", "conc", "rate", "now", "w", "n"):
        text = text.replace(f":{key}", f"%({key})s")
    return text


def close(storage: Any) -> None:
    found = storage.__dict__.pop("_multi_engine", None)
    if found is not None:
        found.dispose()
