"""The machine's floor for one enqueue: what no queue library can beat here.

    python -m benchmarks.floor [--calls 5000]

An enqueue that is persisted before it returns costs at least one round trip to
the server (Redis) or one durable commit (PostgreSQL, SQLite). This measures
those floors with nothing of exqueue in the way, next to exqueue's own enqueue
on the same store in the same run, and prints the share of each enqueue that
is exqueue's (the Python around the call, and its server-side work):

- Redis: ``PING`` through a redis-py connection, and exqueue's enqueue script
  alone on the server (``INFO commandstats`` before and after).
- PostgreSQL: a one-row ``INSERT`` in autocommit (one WAL flush each), psycopg.
- SQLite: a one-row ``INSERT`` in its own transaction, WAL, ``synchronous=FULL``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable

from tabulate import tabulate

from benchmarks import common
from benchmarks.exq_app import JOB, make_queue, make_storage


def _rate(calls: int, one: Callable[[int], object]) -> float:
    started = time.perf_counter()
    for n in range(calls):
        one(n)
    return calls / (time.perf_counter() - started)


def _evalsha_usec(client: object) -> float:
    stats = client.info("commandstats").get("cmdstat_evalsha", {})  # type: ignore[attr-defined]
    return float(stats.get("usec", 0))


def redis_row(calls: int) -> list[object]:
    import redis

    client = redis.Redis.from_url(common.REDIS_URL)
    conn = client.connection_pool.get_connection()

    def ping(_: int) -> None:
        conn.send_command("PING")
        conn.read_response()

    floor = _rate(calls, ping)
    client.connection_pool.release(conn)
    queue = make_queue(make_storage(common.REDIS_URL))
    before = _evalsha_usec(client)
    rate = _rate(calls, lambda n: queue.enqueue(JOB, n))
    server_us = (_evalsha_usec(client) - before) / calls
    queue.storage.close()
    common.flush_bench_redis()
    return ["redis", "PING round trip (redis-py)", floor, rate, server_us]


def postgres_row(calls: int) -> list[object]:
    import psycopg

    # A plain table: a TEMP one is not WAL-logged, so its commits flush nothing.
    table = f"exqbench_floor_{os.getpid()}"
    with psycopg.connect(common.PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id text PRIMARY KEY, payload bytea)")
        try:
            floor = _rate(
                calls,
                lambda n: conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (str(n), b"x")),
            )
        finally:
            conn.execute(f"DROP TABLE {table}")
    storage = make_storage(common.PG_URL)
    storage.destroy()
    storage.close()
    queue = make_queue(make_storage(common.PG_URL))
    rate = _rate(calls, lambda n: queue.enqueue(JOB, n))
    queue.storage.close()
    return ["postgres", "1-row INSERT, autocommit (psycopg)", floor, rate, None]


def sqlite_row(calls: int) -> list[object]:
    with tempfile.TemporaryDirectory(prefix="exqbench-floor-") as tmp:
        db = sqlite3.connect(os.path.join(tmp, "floor.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE probe (id TEXT PRIMARY KEY, payload BLOB)")

        def insert(n: int) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO probe VALUES (?, ?)", (str(n), b"x"))
            db.execute("COMMIT")

        floor = _rate(calls, insert)
        db.close()
        queue = make_queue(make_storage(f"sqlite:///{os.path.join(tmp, 'exq.db')}"))
        rate = _rate(calls, lambda n: queue.enqueue(JOB, n))
        queue.storage.close()
    return ["sqlite", "1-row INSERT + COMMIT, WAL, synchronous=FULL", floor, rate, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    common.ensure_databases()
    rows = []
    for row in (redis_row, postgres_row, sqlite_row):
        backend, floor_name, floor, rate, server_us = row(args.calls)
        assert isinstance(floor, float) and isinstance(rate, float)
        floor_us, enqueue_us = 1e6 / floor, 1e6 / rate
        rows.append(
            [
                backend,
                floor_name,
                f"{floor:,.0f}",
                f"{rate:,.0f}",
                f"{enqueue_us - floor_us:.0f}",
                "" if server_us is None else f"{server_us:.1f}",
            ]
        )
    print(
        tabulate(
            rows,
            headers=[
                "backend",
                "floor: one durable write",
                "floor/s",
                "exqueue enqueue/s",
                "exqueue µs over floor",
                "of which server µs",
            ],
            tablefmt="github",
        )
    )


if __name__ == "__main__":
    main()
