"""Measure claim cost on a big PostgreSQL table: 1,000,000 waiting + 100,000 dead rows.

    python -m benchmarks.pgclaim [postgresql://postgres@127.0.0.1/test]

Fills a throw-away prefix with ``generate_series`` (fast, server side), then
times claim + complete round trips; drops the tables at the end.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid

from sqlalchemy import text

from exqueue_sql import SQLStorage

WAITING_ROWS = 1_000_000
DEAD_ROWS = 100_000


def _fill(storage: SQLStorage) -> None:
    table = storage._jobs.name
    fill = text(
        f"INSERT INTO {table} (id, worker, payload, state, attempt, max_attempts, run_at,"
        " enqueued_at, errors)"
        " SELECT 'b' || g, CASE WHEN g % 10 = 0 THEN 'other' ELSE 'bench' END, '\\x00',"
        " :state, 0, 3, g * 0.001, 0, '[]' FROM generate_series(:start, :stop) AS g"
    )
    with storage.engine.begin() as conn:
        conn.execute(fill, {"state": "dead", "start": 1, "stop": DEAD_ROWS})
        conn.execute(
            fill, {"state": "waiting", "start": DEAD_ROWS + 1, "stop": DEAD_ROWS + WAITING_ROWS}
        )
    with storage.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            text(f"VACUUM ANALYZE {table}")
        )


def _time(label: str, rounds: int, call: object) -> None:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()  # type: ignore[operator]
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    p99 = samples[int(len(samples) * 0.99) - 1]
    print(f"{label:<40} median {statistics.median(samples):6.3f} ms   p99 {p99:6.3f} ms")


def main(url: str) -> None:
    storage = SQLStorage(url, prefix=f"bench{uuid.uuid4().hex[:6]}_")
    try:
        started = time.perf_counter()
        _fill(storage)
        took = time.perf_counter() - started
        print(f"filled {WAITING_ROWS:,} waiting + {DEAD_ROWS:,} dead rows in {took:.1f}s")
        now = 1e9

        def claim(limit: int, serial: bool = False) -> None:
            token = uuid.uuid4().hex
            got = storage.claim(
                "bench", limit, now=now, owner="b", token=token, lease_until=now + 30, serial=serial
            )
            assert got or serial
            for record in got:
                storage.complete(record.id, token)

        _time("claim 1 + complete 1", 1000, lambda: claim(1))
        _time("claim 10 + complete 10", 200, lambda: claim(10))
        _time(
            "claim 1 (no complete)",
            1000,
            lambda: storage.claim("bench", 1, now=now, owner="b", token="x", lease_until=now),
        )
        _time("serial head claim (head running)", 1000, lambda: claim(1, serial=True))
        _time("counts() over 1.1M rows", 5, lambda: storage.counts(now))
        _time("recover() (nothing expired)", 100, lambda: storage.recover(0.0, error="lost"))
        _time("list_jobs(state='dead', limit=100)", 100, lambda: storage.list_jobs(state="dead"))
    finally:
        storage.destroy()
        storage.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1/test")
