"""Issue 13 item 3, SQL part: one damaged stored field (a hostile or corrupt row).

A column is overwritten with SQL, as a careless operator, a hostile tool or a
corrupt disk would. The damaged job becomes dead with the reason, alone: its
neighbours are claimed, recovered and listed, and a node starts over it. Before,
the claim or the recovery failed as a whole (PostgreSQL's one-statement claim
had already committed, leaving the good jobs "running" for ever) and
``queue.start()`` raised.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import exqueue
from exqueue.storage import DEAD, RUNNING, WAITING, NewJob
from exqueue_sql import SQLStorage
from tests.support.backends import BackendHandle, backend_factory

NOW = 1_700_000_000.0


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def sql(request: Any, tmp_path: Path) -> Iterator[SQLStorage]:
    handle = BackendHandle(request.param, backend_factory(request.param, tmp_path))
    storage = handle.open()
    assert isinstance(storage, SQLStorage)
    yield storage
    handle.close_all()


def damage(storage: SQLStorage, job_id: str, column: str, value: object) -> None:
    table = storage.engine.dialect.identifier_preparer.quote(f"{storage.prefix}jobs")
    with storage.engine.begin() as conn:
        conn.execute(
            text(f"UPDATE {table} SET {column} = :v WHERE id = :id"), {"v": value, "id": job_id}
        )


def enqueue(storage: SQLStorage, count: int, worker: str = "w") -> list[str]:
    ids = [f"{worker}{n}" for n in range(count)]
    storage.enqueue(
        [NewJob(i, worker, b"[[], {}]", NOW - 10 + n, NOW - 20, 3) for n, i in enumerate(ids)]
    )
    return ids


def claim(storage: SQLStorage, limit: int, owner: str = "n", now: float = NOW) -> list[str]:
    got = storage.claim("w", limit, now=now, owner=owner, token=f"t-{owner}", lease_until=now + 30)
    return [r.id for r in got]


def assert_dead_with_reason(storage: SQLStorage, job_id: str, column: str) -> None:
    record = storage.get(job_id)
    assert record is not None and record.state == DEAD, record
    assert record.errors[-1].startswith("damaged stored job: ") and column in record.errors[-1]
    assert record.lease_token is None


DAMAGE = {
    "errors": "not json {",
    "state": "bogus",
}


def test_a_damaged_row_dies_alone_at_claim(sql: SQLStorage) -> None:
    ids = enqueue(sql, 5)
    damage(sql, ids[2], "errors", DAMAGE["errors"])
    assert claim(sql, 5) == [ids[0], ids[1], ids[3], ids[4]]
    assert_dead_with_reason(sql, ids[2], "errors")
    running = {r.id for r in sql.list_jobs(state=RUNNING)}
    assert running == {ids[0], ids[1], ids[3], ids[4]}


def test_a_damaged_number_dies_alone_at_claim_on_sqlite(sql: SQLStorage) -> None:
    if sql.engine.dialect.name != "sqlite":
        pytest.skip("only SQLite stores text in a number column")
    ids = enqueue(sql, 3)
    damage(sql, ids[1], "attempt", "three")
    assert claim(sql, 3) == [ids[0], ids[2]]
    assert_dead_with_reason(sql, ids[1], "attempt")
    record = sql.get(ids[1])
    assert record is not None and record.attempt == 0  # reset, so it can be retried


def test_a_damaged_serial_head_dies_alone(sql: SQLStorage) -> None:
    ids = enqueue(sql, 2)
    damage(sql, ids[0], "errors", DAMAGE["errors"])
    first = sql.claim("w", 1, now=NOW, owner="n", token="t", lease_until=NOW + 30, serial=True)
    assert first == []
    assert_dead_with_reason(sql, ids[0], "errors")
    # The dead head still blocks a serial worker, as any dead head does, until a person acts.
    sql.delete(ids[0])
    again = sql.claim("w", 1, now=NOW, owner="n", token="t", lease_until=NOW + 30, serial=True)
    assert [r.id for r in again] == [ids[1]]


def test_recovery_buries_a_damaged_running_row_alone(sql: SQLStorage) -> None:
    ids = enqueue(sql, 5)
    assert claim(sql, 5) == ids
    damage(sql, ids[1], "errors", DAMAGE["errors"])
    damage(sql, ids[3], "lease_expires", None)  # would never expire
    recovered = sql.recover(NOW + 60, error="worker lost")
    assert set(recovered.waiting) == {ids[0], ids[2], ids[3], ids[4]}
    assert recovered.dead == (ids[1],)
    assert_dead_with_reason(sql, ids[1], "errors")
    assert {r.id for r in sql.list_jobs(state=WAITING)} == {ids[0], ids[2], ids[3], ids[4]}


def test_a_retry_or_death_of_a_job_damaged_while_running_is_recorded(sql: SQLStorage) -> None:
    ids = enqueue(sql, 2)
    assert claim(sql, 2) == ids
    damage(sql, ids[0], "errors", DAMAGE["errors"])
    damage(sql, ids[1], "errors", DAMAGE["errors"])
    assert sql.schedule_retry(ids[0], "t-n", run_at=NOW + 5, error="boom")
    assert sql.bury(ids[1], "t-n", error="boom")
    for job_id in ids:
        record = sql.get(job_id)
        assert record is not None and record.errors[-1] == "boom"
        assert record.errors[-2].startswith("damaged stored job: errors=")


def test_listing_and_counting_survive_a_damaged_row(sql: SQLStorage) -> None:
    ids = enqueue(sql, 3)
    damage(sql, ids[0], "state", DAMAGE["state"])
    damage(sql, ids[1], "errors", DAMAGE["errors"])
    listed = {r.id: r for r in sql.list_jobs()}
    assert set(listed) == set(ids)
    assert listed[ids[0]].state == DEAD and "state='bogus'" in listed[ids[0]].errors[-1]
    assert "errors=" in listed[ids[1]].errors[-1]
    assert listed[ids[2]].errors == ()
    counts = sql.counts(NOW)["w"]
    assert (counts.waiting, counts.dead) == (2, 1)
    queue = exqueue.Queue(sql, clock=lambda: NOW)
    assert len(queue.jobs()) == 3


def test_a_node_starts_over_a_damaged_row_left_by_its_crashed_run(sql: SQLStorage) -> None:
    ids = enqueue(sql, 4, worker="w")
    # A previous run of node "n" claimed them all and crashed; one row got damaged.
    assert claim(sql, 4, owner="n") == ids
    damage(sql, ids[2], "errors", DAMAGE["errors"])
    ran: list[str] = []
    done = threading.Event()
    queue = exqueue.Queue(sql, node="n", poll_interval=0.05)

    @queue.worker(name="w", concurrency=2)
    def w() -> None:
        ran.append("x")
        if len(ran) == 3:
            done.set()

    queue.start()
    try:
        assert done.wait(60), f"ran {len(ran)} of the 3 good jobs"
    finally:
        queue.stop(timeout=5)
    assert_dead_with_reason(sql, ids[2], "errors")
