"""What a limit or a pause costs a claim: round trips and time per claim batch (issue 15).

    python -m benchmarks.limitcost [--backends sqlite,postgres,mariadb,redis]
                                   [--rounds 7] [--claims 40] [--batch 10]

Per backend, one store holds five worker types side by side, and each round
claims ``--claims`` batches of ``--batch`` jobs of each type in turn (then
completes them), so the types are measured interleaved in the same run (each
round starting with the next type):

* ``plain``: no limit, ``claim`` (the baseline);
* ``plain-nopause`` (SQL only): the same claim with the pause check taken out of
  its statement, to show what checking pause inside every claim costs;
* ``limited``: ``claim_limited`` with ``global_limit`` far above what runs (the
  bound is checked, never hit);
* ``partitioned``: the same, per partition, over 50 partitions;
* ``rated``: a rate limit never reached (one start recorded per claimed job);
* ``paused``: a paused type (every claim finds it paused and returns nothing).

Round trips per claim batch: SQL counts every statement the driver is sent
(SQLAlchemy ``before_cursor_execute`` on every engine of the storage, and the
statements run on the driver's cursor, ``exqueue_sql._prepared.driver_rows``) plus each
COMMIT, plus each BEGIN on PostgreSQL (psycopg sends it as a round trip of its
own; PyMySQL and SQLite do not); Redis counts the scripts run (each one EVALSHA).
Claim time: the median over rounds of each round's median claim-batch time, with
the range of the round medians.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import event, true
from tabulate import tabulate

from benchmarks import common
from exqueue.storage import LimitedClaim, Limits, NewJob

TYPES = ("plain", "plain-nopause", "limited", "partitioned", "rated", "paused")
LIMITS = {
    "limited": Limits(concurrency=1_000_000),
    "partitioned": Limits(concurrency=1_000_000, partitioned=True),
    "rated": Limits(rate=1_000_000_000, per=1.0),
    "paused": Limits(concurrency=1_000_000),
}


PG_URL = os.environ.get("EXQUEUE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("EXQUEUE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("EXQUEUE_TEST_REDIS_URL", common.REDIS_URL)


class Counter:
    def __init__(self) -> None:
        self.n = 0


def open_store(backend: str, tmp: str) -> tuple[Any, Counter]:
    counter = Counter()
    if backend == "redis":
        from exqueue_redis import RedisStorage

        storage: Any = RedisStorage(REDIS_URL, namespace=f"lc{uuid.uuid4().hex[:8]}")
        run = storage._run

        def counted(name: str, *args: Any) -> Any:
            counter.n += 1
            return run(name, *args)

        storage._run = counted
        return storage, counter
    from exqueue_sql import SQLStorage

    # The test databases (tables under a fresh prefix, dropped at the end).
    url = {"sqlite": f"sqlite:///{tmp}/lc.db", "postgres": PG_URL, "mariadb": MYSQL_URL}[backend]
    storage = SQLStorage(url, prefix=f"lc{uuid.uuid4().hex[:8]}_")
    dialect = storage._dialect
    extra = (getattr(dialect, "_relaxed", None), getattr(dialect, "_autocommit", None))
    if backend == "mariadb":
        from exqueue_sql import _limits_mysql

        extra += (_limits_mysql.engine_of(storage),)  # the limited claims' own pool
    pools = (storage.engine, *extra)
    engines = {id(e): e for e in pools if e is not None}
    pg = backend == "postgres"

    def one(*_: Any, **__: Any) -> None:
        counter.n += 1

    def begun(conn: Any) -> None:
        # SQLAlchemy reports a begin on autocommit connections too; psycopg sends
        # BEGIN only outside autocommit.
        if not conn.connection.driver_connection.autocommit:
            counter.n += 1

    for engine in engines.values():
        target = getattr(engine, "engine", engine)
        event.listen(target, "before_cursor_execute", one)
        event.listen(target, "commit", one)
        if pg:
            event.listen(target, "begin", begun)
    # The hot statements run on the driver's cursor, unseen by SQLAlchemy's events.
    from exqueue_sql import _dialect, _prepared

    real_rows = _prepared.driver_rows

    def counted_rows(*args: Any, **kwargs: Any) -> Any:
        counter.n += 1
        return real_rows(*args, **kwargs)

    _prepared.driver_rows = counted_rows  # type: ignore[assignment]
    _dialect.driver_rows = counted_rows  # type: ignore[assignment]
    return storage, counter


def fill(storage: Any, jobs: int) -> None:
    batch = []
    for kind in TYPES:
        for i in range(jobs):
            part = f"p{i % 50}" if kind == "partitioned" else None
            batch.append(NewJob(f"{kind}-{i}-{uuid.uuid4().hex[:6]}", kind, b"x", 0.0, 0.0, 3,
                                partition=part))  # fmt: skip
            if len(batch) >= 1000:
                storage.enqueue(batch)
                batch = []
    if batch:
        storage.enqueue(batch)
    storage.pause("paused", True)


def claimer(storage: Any, kind: str, batch: int) -> Callable[[float], list[Any]]:
    def claim(now: float) -> list[Any]:
        token = uuid.uuid4().hex
        if kind in LIMITS:
            request = LimitedClaim(kind, batch, now, "bench", token, now + 60, LIMITS[kind])
            return list(storage.claim_limited(request))
        return list(storage.claim(kind, batch, now=now, owner="bench", token=token,
                                  lease_until=now + 60))  # fmt: skip

    return claim


def measure(backend: str, rounds: int, claims: int, batch: int) -> list[list[Any]]:
    tmp = tempfile.mkdtemp()
    storage, counter = open_store(backend, tmp)
    kinds = [k for k in TYPES if backend != "redis" or k != "plain-nopause"]
    try:
        fill(storage, rounds * claims * batch + batch)
        times: dict[str, list[float]] = {k: [] for k in kinds}
        trips: dict[str, list[int]] = {k: [] for k in kinds}
        got: dict[str, int] = {k: 0 for k in kinds}
        import exqueue_sql._dialect as sql_dialect

        real_not_paused = sql_dialect.not_paused
        for number in range(rounds):
            # Each round starts with another type, so none always pays for going first.
            shift = number % len(kinds)
            for kind in kinds[shift:] + kinds[:shift]:
                claim = claimer(storage, kind, batch)
                per: list[float] = []
                if kind == "plain-nopause":
                    sql_dialect.not_paused = lambda jobs, worker: true()  # type: ignore[assignment]
                try:
                    for _ in range(claims):
                        before = counter.n
                        start = time.perf_counter()
                        found = claim(time.time())
                        per.append(time.perf_counter() - start)
                        trips[kind].append(counter.n - before)
                        got[kind] += len(found)
                        if found:
                            storage.complete_many([(r.id, r.lease_token) for r in found])
                finally:
                    sql_dialect.not_paused = real_not_paused
                times[kind].append(statistics.median(per))
        rows = []
        for kind in kinds:
            med = [t * 1e3 for t in times[kind]]
            rows.append([
                backend, kind, f"{statistics.median(trips[kind]):g}",
                f"{min(trips[kind])}-{max(trips[kind])}",
                f"{statistics.median(med):.3f}", f"{min(med):.3f}-{max(med):.3f}",
                got[kind],
            ])  # fmt: skip
        return rows
    finally:
        if hasattr(storage, "destroy"):
            storage.destroy()
        storage.close()


def main(argv: list[str]) -> None:
    parser = common.arguments("benchmarks.limitcost", __doc__)
    parser.add_argument("--backends", default="sqlite,postgres,mariadb,redis")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--claims", type=int, default=40)
    parser.add_argument("--batch", type=int, default=10)
    args = parser.parse_args(argv)
    rows: list[list[Any]] = []
    for backend in args.backends.split(","):
        rows += measure(backend, args.rounds, args.claims, args.batch)
    print(
        tabulate(
            rows,
            headers=["backend", "type", "round trips", "range", "ms/claim", "range", "claimed"],
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
