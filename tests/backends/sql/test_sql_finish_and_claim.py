"""``finish_and_claim`` on SQLite, PostgreSQL and MariaDB: successes, then a claim, one call.

Each part keeps its own call's rules (fencing, pause, claim order, serial heads,
completion markers), on PostgreSQL's one statement as in the other databases' transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, bindparam, func, select, text
from sqlalchemy.exc import DBAPIError

from exqueue.storage import DEAD, RUNNING, Unique
from exqueue.storage_next import (
    FINISH_AND_CLAIM,
    FinishAndClaim,
    Finished,
    SupportsFinishAndClaim,
)
from exqueue_sql import SQLStorage
from exqueue_sql._prepared import Prepared, driver_rows
from tests.support.backends import opened_sql
from tests.support.jobs import NOW
from tests.support.jobs import new_job as job


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def sql(request: Any, tmp_path: Path) -> Iterator[SQLStorage]:
    with opened_sql(request.param, tmp_path) as storage:
        yield storage


def claim(storage: SQLStorage, limit: int, token: str = "t1", serial: bool = False) -> list[str]:
    got = storage.claim(
        "w", limit, now=NOW, owner="o", token=token, lease_until=NOW + 60, serial=serial
    )
    return [r.id for r in got]


def finish(
    storage: SQLStorage,
    done: list[tuple[str, str]],
    limit: int = 10,
    token: str = "t2",
    serial: bool = False,
    worker: str = "w",
) -> Finished:
    request = FinishAndClaim(
        done=done, worker=worker, limit=limit, now=NOW + 1, owner="o2", token=token,
        lease_until=NOW + 99, serial=serial,
    )  # fmt: skip
    return storage.finish_and_claim(request)


def state(storage: SQLStorage, job_id: str) -> tuple[str, str | None] | None:
    record = storage.get(job_id)
    return None if record is None else (record.state, record.lease_token)


def test_declared_on_every_sql_database(sql: SQLStorage) -> None:
    assert FINISH_AND_CLAIM in sql.capabilities
    assert isinstance(sql, SupportsFinishAndClaim)


def test_completes_then_claims_in_claim_order_with_the_new_lease(sql: SQLStorage) -> None:
    sql.enqueue([job("a"), job("b"), job("c", priority=5), job("d"), job("e", priority=-1)])
    assert claim(sql, 2) == ["e", "a"]
    got = finish(sql, [("a", "t1"), ("e", "t1")], limit=2)
    assert got.completed == ["a", "e"]  # the request's order
    assert [r.id for r in got.claimed] == ["b", "d"]
    for record in got.claimed:
        assert (record.state, record.attempt) == (RUNNING, 1)
        assert (record.lease_owner, record.lease_token, record.lease_expires) == (
            "o2", "t2", NOW + 99,
        )  # fmt: skip
        assert state(sql, record.id) == (RUNNING, "t2")
    assert sql.get("a") is None and sql.get("e") is None
    assert sql.get("c") is not None and state(sql, "c") == ("waiting", None)


def test_a_token_that_no_longer_holds_completes_nothing_but_the_claim_happens(
    sql: SQLStorage,
) -> None:
    sql.enqueue([job("a"), job("b"), job("c")])
    assert claim(sql, 1) == ["a"]
    got = finish(sql, [("a", "stale"), ("nope", "t1")], limit=1)
    assert got.completed == []
    assert [r.id for r in got.claimed] == ["b"]
    assert state(sql, "a") == (RUNNING, "t1")  # still held by its claimer


def test_serial_head_completed_in_the_call_lets_the_next_one_be_claimed(
    sql: SQLStorage,
) -> None:
    sql.enqueue([job("a"), job("b", priority=-5), job("c")])
    assert claim(sql, 1, serial=True) == ["a"]
    got = finish(sql, [("a", "t1")], limit=1, serial=True)
    assert got.completed == ["a"]
    assert [r.id for r in got.claimed] == ["b"]
    # A head that stays running (wrong token) keeps the type's next job back.
    got = finish(sql, [("b", "t1")], limit=1, serial=True, token="t3")
    assert (got.completed, got.claimed) == ([], [])
    assert state(sql, "b") == (RUNNING, "t2")


def test_a_paused_type_completes_but_claims_nothing(sql: SQLStorage) -> None:
    sql.enqueue([job("a"), job("b")])
    assert claim(sql, 1) == ["a"]
    sql.pause("w", True)
    got = finish(sql, [("a", "t1")])
    assert (got.completed, got.claimed) == (["a"], [])
    sql.pause("w", False)
    assert finish(sql, []).claimed[0].id == "b"


def test_no_successes_is_a_claim_and_no_room_is_only_the_successes(sql: SQLStorage) -> None:
    sql.enqueue([job("a"), job("b"), job("other", "v")])
    got = finish(sql, [], limit=1)
    assert (got.completed, [r.id for r in got.claimed]) == ([], ["a"])
    got = finish(sql, [("a", "t2"), ("a", "t2")], limit=0)
    assert (got.completed, got.claimed) == (["a"], [])
    assert state(sql, "b") == ("waiting", None)
    # Another type's job is completed while this type's is claimed.
    assert [r.id for r in finish(sql, [], worker="v", token="tv").claimed] == ["other"]
    got = finish(sql, [("other", "tv")])
    assert (got.completed, [r.id for r in got.claimed]) == (["other"], ["b"])


def test_a_unique_period_leaves_its_completion_marker(sql: SQLStorage) -> None:
    period = Unique("k", period=100.0)
    sql.enqueue([job("a", unique=period), job("b"), job("c")])
    assert claim(sql, 2) == ["a", "b"]
    got = finish(sql, [("b", "t1"), ("a", "t1")], limit=1)
    assert (got.completed, [r.id for r in got.claimed]) == (["b", "a"], ["c"])
    with sql.engine.connect() as conn:
        assert conn.scalar(select(sql._tables.done.c.hold_until)) == NOW + 101
    # The completed job holds its key for its period: a new enqueue names it.
    assert sql.enqueue([job("d", enqueued_at=NOW + 50, unique=period)]) == ["a"]
    # One success alone (PostgreSQL sends it as scalars, not arrays) leaves its marker too.
    sql.enqueue([job("e", unique=Unique("q", period=5.0))])
    got = finish(sql, [("c", "t2")], token="t3")
    assert (got.completed, [r.id for r in got.claimed]) == (["c"], ["e"])
    got = finish(sql, [("e", "t3")], token="t4")
    assert (got.completed, got.claimed) == (["e"], [])
    with sql.engine.connect() as conn:
        held = conn.execute(select(sql._tables.done.c.job_id, sql._tables.done.c.hold_until))
        assert sorted(held) == [("a", NOW + 101), ("e", NOW + 6)]


def test_a_damaged_row_the_claim_takes_is_buried(sql: SQLStorage) -> None:
    sql.enqueue([job("a"), job("b"), job("c")])
    assert claim(sql, 1) == ["a"]
    table = sql.engine.dialect.identifier_preparer.quote(f"{sql.prefix}jobs")
    with sql.engine.begin() as conn:
        conn.execute(text(f"UPDATE {table} SET errors = 'not json {{' WHERE id = 'b'"))
    got = finish(sql, [("a", "t1")])
    assert (got.completed, [r.id for r in got.claimed]) == (["a"], ["c"])
    dead = sql.get("b")
    assert dead is not None and dead.state == DEAD and "damaged" in dead.errors[-1]


@pytest.mark.parametrize("call", ["finish", "claim", "complete"])
def test_postgres_a_connection_the_server_closed_is_replaced_and_the_call_runs(
    tmp_path: Path, call: str
) -> None:
    # The hot statements run on the driver's cursor (``Prepared.rows``): a driver
    # error must still reach the runner as SQLAlchemy's, with the connection invalidated.
    with opened_sql("postgres", tmp_path) as sql:
        sql.enqueue([job("a"), job("b"), job("c")])
        assert claim(sql, 1) == ["a"]
        kept = sql._dialect.kept(True)
        assert kept is not None

        def backend(conn: Connection) -> int:
            return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())

        pid = kept.run(backend)  # the one kept connection, the next call's too
        with sql.engine.connect() as admin:
            assert admin.exec_driver_sql(f"SELECT pg_terminate_backend({pid})").scalar_one()
        if call == "finish":
            got = finish(sql, [("a", "t1")], limit=1)
            assert (got.completed, [r.id for r in got.claimed]) == (["a"], ["b"])
        elif call == "claim":
            assert claim(sql, 1, token="t2") == ["b"]
        else:
            assert sql.complete_many([("a", "t1")], now=NOW) == ["a"]
        assert kept.run(backend) != pid


def test_a_claimed_record_is_the_row_as_stored_after_the_claim(sql: SQLStorage) -> None:
    # PostgreSQL's claim does not read back what it set itself (state, worker,
    # lease): the record it builds must still be the row a later read finds.
    full = {
        "priority": -1, "meta": {"k": "v"}, "timeout": 2.5, "expires_at": NOW + 500,
        "unique": Unique("u1"), "partition": "p1",
    }  # fmt: skip
    sql.enqueue([job("a", **full), job("b", **full | {"unique": Unique("u2")}), job("c")])
    [first] = sql.claim("w", 1, now=NOW, owner="o", token="t1", lease_until=NOW + 60)
    assert first == sql.get("a")
    got = finish(sql, [("a", "t1")], limit=2)
    assert got.claimed == [sql.get("b"), sql.get("c")]
    assert (got.claimed[0].meta, got.claimed[0].partition) == ({"k": "v"}, "p1")


def test_postgres_a_failed_statement_does_not_spoil_the_next_on_its_connection(
    tmp_path: Path,
) -> None:
    # The hot statements share one psycopg cursor per pooled connection: a statement
    # that fails on it leaves the connection's next calls working.
    with opened_sql("postgres", tmp_path) as sql:
        sql.enqueue([job("a"), job("b")])
        assert claim(sql, 1) == ["a"]
        relaxed = sql._dialect.single_engine(True)
        assert relaxed is not None
        with relaxed.connect() as conn:  # the pool's one connection, the next call's too
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            with pytest.raises(DBAPIError):
                driver_rows(conn, "SELECT 1 / 0", {})
        got = finish(sql, [("a", "t1")], limit=1)
        assert (got.completed, [r.id for r in got.claimed]) == (["a"], ["b"])
        with relaxed.connect() as conn:
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() == pid


def test_a_statements_constants_are_in_its_text_where_the_driver_names_its_marks(
    sql: SQLStorage,
) -> None:
    # psycopg and PyMySQL take named marks: a constant of the statement (a state)
    # is written into the text rather than sent on every call. SQLite's marks are
    # positional, so there it stays a parameter. Either way the statement selects
    # what it says.
    jobs = sql._jobs
    statement = (
        select(func.count())
        .select_from(jobs)
        .where(jobs.c.state == RUNNING, jobs.c.worker == bindparam("worker"))
    )
    prepared = Prepared(sql.engine, statement)
    named = sql.engine.dialect.paramstyle == "pyformat"
    assert ("'running'" in prepared.sql) is named
    sql.enqueue([job("a"), job("b")])
    claim(sql, 1)
    with sql.engine.connect() as conn:
        assert [tuple(row) for row in prepared.rows(conn, worker="w")] == [(1,)]
        assert [tuple(row) for row in prepared.rows(conn, worker="other")] == [(0,)]
