"""Protocol version 2 on SQL: what the tables do their own way.

Unique enqueue under races (threads and processes, each dialect), the tag
filter over the stored JSON text, damaged meta, completion markers kept in
the unique table and pruned by ``expire``. The generic rules (claim order,
uniqueness per state and period, expiry) are the conformance suite's.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from exqueue.storage import DEAD, EXPIRED, RUNNING, WAITING, Unique
from exqueue_sql import SQLStorage
from tests.support.backends import opened_sql
from tests.support.jobs import NOW
from tests.support.jobs import new_job as job

THREADS, PROCESSES = 8, 4


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def sql(request: Any, tmp_path: Path) -> Iterator[SQLStorage]:
    with opened_sql(request.param, tmp_path) as storage:
        yield storage


def claim(storage: SQLStorage, worker: str = "w", limit: int = 10, now: float = NOW) -> list[str]:
    got = storage.claim(worker, limit, now=now, owner="o", token="t", lease_until=now + 60)
    return [r.id for r in got]


def test_claims_follow_priority_then_run_at_then_seq(sql: SQLStorage) -> None:
    sql.enqueue(
        [
            job("late0", priority=0, run_at=NOW - 1),
            job("p5", priority=5, run_at=NOW - 9),
            job("early0", priority=0, run_at=NOW - 5),
            job("neg", priority=-3),
            job("expired", priority=-9, expires_at=NOW),
            job("future", priority=-9, run_at=NOW + 5),
            job("p5b", priority=5, run_at=NOW - 9),
        ]
    )
    assert claim(sql) == ["neg", "early0", "late0", "p5", "p5b"]
    assert sql.expire(NOW) == ["expired"]
    dead = sql.get("expired")
    assert dead is not None and dead.state == DEAD and dead.errors == (EXPIRED,)
    assert dead.attempt == 0


def test_serial_ignores_priority_and_never_runs_an_expired_head(sql: SQLStorage) -> None:
    sql.enqueue([job("a", priority=9, expires_at=NOW), job("b", priority=-9)])
    got = sql.claim("w", 1, now=NOW, owner="o", token="t", lease_until=NOW + 9, serial=True)
    assert got == []
    sql.enqueue([job("c", "s", priority=9), job("d", "s", priority=-9)])
    got = sql.claim("s", 1, now=NOW, owner="o", token="t", lease_until=NOW + 9, serial=True)
    assert [r.id for r in got] == ["c"]


def test_fields_round_trip_and_requeue_keeps_them(sql: SQLStorage) -> None:
    meta = {"tenant": "ä\"'%_\\", "trace": "x" * 500}
    sql.enqueue(
        [job("a", priority=-7, meta=meta, timeout=2.5, expires_at=NOW + 99, unique=Unique("k"))]
    )
    record = sql.get("a")
    assert record is not None
    assert (record.priority, dict(record.meta), record.timeout) == (-7, meta, 2.5)
    assert (record.expires_at, record.unique_key) == (NOW + 99, "k")
    assert claim(sql) == ["a"]
    assert sql.bury("a", "t", error="boom")
    assert sql.requeue("a", "a2", now=NOW + 1) == "requeued"
    again = sql.get("a2")
    assert again is not None and again.state == WAITING
    assert (again.priority, dict(again.meta), again.timeout) == (-7, meta, 2.5)
    assert (again.expires_at, again.unique_key) == (None, "k")


def test_tag_filter_matches_exact_entries_only(sql: SQLStorage) -> None:
    sql.enqueue(
        [
            job("a", meta={"t": "1"}),
            job("b", meta={"t": "10"}),
            job("c", meta={"x": '"t":"1"'}),  # the entry's text inside a value
            job("d", meta={"T": "1"}),  # SQLite's LIKE ignores ASCII case
            job("e", meta={"t": "1", "u": "%"}),
            job("f", meta={"%": "_"}),
            job("g"),
        ]
        + [job(f"n{i}", meta={"t": "2"}) for i in range(30)]
        + [job("z", meta={"t": "1"})]
    )
    assert [r.id for r in sql.list_jobs(tag=("t", "1"))] == ["a", "e", "z"]
    assert [r.id for r in sql.list_jobs(tag=("t", "1"), limit=2)] == ["a", "e"]
    first = sql.get("e")
    assert first is not None
    assert [r.id for r in sql.list_jobs(tag=("t", "1"), after_seq=first.seq)] == ["z"]
    assert [r.id for r in sql.list_jobs(tag=("%", "_"))] == ["f"]
    assert [r.id for r in sql.list_jobs(tag=("t", "1"), state=RUNNING)] == []


@pytest.mark.parametrize("stored", ["[1]", '{"a": 1}', "not json", '"s"'])
def test_damaged_meta_dies_alone_and_lists(sql: SQLStorage, stored: str) -> None:
    sql.enqueue([job("bad", priority=-1, meta={"t": "1"}), job("good")])
    table = sql.engine.dialect.identifier_preparer.quote(f"{sql.prefix}jobs")
    with sql.engine.begin() as conn:
        conn.execute(text(f"UPDATE {table} SET meta = :m WHERE id = 'bad'"), {"m": stored})
    listed = {r.id: r for r in sql.list_jobs()}
    assert dict(listed["bad"].meta) == {} and "meta=" in listed["bad"].errors[-1]
    assert claim(sql) == ["good"]
    dead = sql.get("bad")
    assert dead is not None and dead.state == DEAD and dict(dead.meta) == {}
    assert "damaged stored job: meta=" in dead.errors[-1]
    assert len(dead.errors) == 1  # buried once: the row reads well now


def test_completion_markers_hold_then_are_pruned(sql: SQLStorage) -> None:
    period = Unique("k", period=100.0)
    assert sql.enqueue([job("a", unique=period)]) == ["a"]
    assert claim(sql) == ["a"]
    assert sql.complete("a", "t", now=NOW + 10)
    assert sql.enqueue([job("b", enqueued_at=NOW + 50, unique=period)]) == ["a"]
    assert sql.enqueue([job("c", "other", unique=period)]) == ["c"]  # another worker type
    # The completed job's period counts, not the asking job's.
    assert sql.enqueue([job("d", enqueued_at=NOW + 50, unique=Unique("k", period=5))]) == ["a"]
    assert sql.enqueue([job("e", enqueued_at=NOW + 50, unique=Unique("k"))]) == ["e"]
    done = sql._tables.done
    with sql.engine.connect() as conn:
        assert conn.scalar(select(done.c.hold_until)) == NOW + 110
    sql.expire(NOW + 111)
    with sql.engine.connect() as conn:
        assert conn.execute(select(done)).all() == []
        assert conn.execute(select(sql._tables.unique)).all() == []


def test_complete_many_keeps_markers_and_plain_successes(sql: SQLStorage) -> None:
    sql.enqueue([job("a", unique=Unique("k", period=60.0)), job("b"), job("c", unique=Unique("q"))])
    assert sorted(claim(sql)) == ["a", "b", "c"]
    done = sql.complete_many([("a", "t"), ("b", "t"), ("c", "t"), ("x", "t")], now=NOW)
    assert sorted(done) == ["a", "b", "c"]
    assert sql.enqueue([job("a2", unique=Unique("k", period=60.0))]) == ["a"]
    assert sql.enqueue([job("c2", unique=Unique("q"))]) == ["c2"]


def test_a_batch_resolves_duplicates_and_refuses_used_ids(sql: SQLStorage) -> None:
    sql.enqueue([job("held", unique=Unique("k"))])
    got = sql.enqueue(
        [job("a", unique=Unique("k")), job("b", unique=Unique("n")), job("c", unique=Unique("n"))]
    )
    assert got == ["held", "b", "b"]
    with pytest.raises(ValueError, match="duplicate"):
        sql.enqueue([job("d", unique=Unique("m")), job("held", unique=Unique("k"))])
    assert sql.get("d") is None


def _enqueue_one(url: str, prefix: str, name: str, barrier: Any, out: Any) -> None:
    storage = SQLStorage(url, prefix=prefix)
    barrier.wait(60)
    try:
        out.put(storage.enqueue([job(name, unique=Unique("the-key"))])[0])
    finally:
        storage.close()


def test_racing_unique_enqueues_leave_one_job(sql: SQLStorage) -> None:
    """8 threads and 4 processes enqueue the same key at once: one job, one holder."""
    url = sql.engine.url.render_as_string(hide_password=False)
    ctx = multiprocessing.get_context("spawn")
    out: Any = ctx.Queue()
    barrier = ctx.Barrier(PROCESSES + THREADS)
    procs = [
        ctx.Process(target=_enqueue_one, args=(url, sql.prefix, f"p{i}", barrier, out))
        for i in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    threads = [
        threading.Thread(target=_enqueue_one, args=(url, sql.prefix, f"t{i}", barrier, out))
        for i in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    holders = [out.get(timeout=10) for _ in range(PROCESSES + THREADS)]
    stored = sql.list_jobs()
    assert len(stored) == 1
    assert set(holders) == {stored[0].id}


def test_meta_is_stored_as_sorted_ascii_json(sql: SQLStorage) -> None:
    sql.enqueue([job("a", meta={"b": "ü", "a": "1"})])
    table = sql.engine.dialect.identifier_preparer.quote(f"{sql.prefix}jobs")
    with sql.engine.connect() as conn:
        stored = conn.execute(text(f"SELECT meta FROM {table}")).scalar_one()
    assert stored == '{"a":"1","b":"\\u00fc"}' and json.loads(stored) == {"a": "1", "b": "ü"}


def test_unique_enqueue_in_the_callers_transaction(sql: SQLStorage) -> None:
    sql.enqueue([job("held", unique=Unique("k"))])
    with sql.engine.connect() as conn:
        with conn.begin():
            pair = [job("a", unique=Unique("k")), job("b", unique=Unique("n"))]
            held = sql.enqueue_in(conn, pair)
            plain = sql.enqueue_in(conn, [job("p")])
        with conn.begin() as rolled_back:
            sql.enqueue_in(conn, [job("c", unique=Unique("m"))])
            rolled_back.rollback()
    assert held == ["held", "b"] and plain == ["p"]
    assert sql.get("a") is None and sql.get("c") is None
    stored = sql.get("b")
    assert stored is not None and stored.unique_key == "n"


@pytest.mark.parametrize("column", ["priority", "expires_at", "timeout", "unique_key"])
def test_other_damaged_v2_columns_die_alone(sql: SQLStorage, column: str) -> None:
    if sql.engine.dialect.name != "sqlite":
        pytest.skip("only SQLite stores text in a number column, or a number in a text one")
    sql.enqueue([job("bad", priority=-1, unique=Unique("k")), job("good")])
    table = sql.engine.dialect.identifier_preparer.quote(f"{sql.prefix}jobs")
    bad_value: object = b"k" if column == "unique_key" else "x"
    with sql.engine.begin() as conn:
        conn.execute(text(f"UPDATE {table} SET {column} = :v WHERE id = 'bad'"), {"v": bad_value})
    assert claim(sql) == ["good"]
    dead = sql.get("bad")
    assert dead is not None and dead.state == DEAD
    assert dead.errors == (f"damaged stored job: {column}={bad_value!r}",)
