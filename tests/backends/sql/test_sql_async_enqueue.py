"""PostgreSQL's native async enqueue (psycopg ``AsyncConnection``), beyond the conformance
check ``async_enqueue``: no thread, concurrent enqueues on one loop, keyed jobs,
connections given back, and the other SQL databases declaring no such capability.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exqueue.storage import ASYNC_ENQUEUE, WAITING, NewJob, Unique
from exqueue_sql import SQLStorage
from exqueue_sql._aio import MAX_IDLE
from tests.support.backends import opened_sql
from tests.support.jobs import new_job


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[SQLStorage]:
    with opened_sql("postgres", tmp_path) as storage:
        yield storage


def job(job_id: str, worker: str = "w", **fields: Any) -> NewJob:
    return new_job(job_id, worker, payload=b"x\x00\xff", **fields)  # bytes JSON cannot carry


def test_postgres_enqueues_on_the_loop_without_a_thread(pg: SQLStorage) -> None:
    assert ASYNC_ENQUEUE in pg.capabilities
    threads: list[set[str]] = []

    async def main() -> tuple[list[str], ...]:
        before = {t.name for t in threading.enumerate()}
        one = await pg.aenqueue([job("a1", priority=2, meta={"tenant": "ü"})])
        many = await pg.aenqueue([job(f"b{n}", worker="v") for n in range(50)])
        # Overlapping enqueues on one loop each get a connection, none is lost.
        both = await asyncio.gather(*(pg.aenqueue([job(f"c{n}")]) for n in range(10)))
        threads.append({t.name for t in threading.enumerate()} - before)
        return one, many, *both

    one, many, *both = asyncio.run(main())
    # asyncio.to_thread would have started the loop's default executor's threads.
    assert not [name for name in threads[0] if name.startswith("asyncio")]
    assert one == ["a1"] and many == [f"b{n}" for n in range(50)]
    assert [ids for ids in both] == [[f"c{n}"] for n in range(10)]
    record = pg.get("a1")
    assert record is not None and record.state == WAITING
    assert record.priority == 2 and dict(record.meta) == {"tenant": "ü"}
    assert record.payload == b"x\x00\xff"
    listed = pg.list_jobs(worker="v", limit=100)
    assert [r.id for r in listed] == [f"b{n}" for n in range(50)]  # seq in batch order
    assert pg._native is not None
    gc.collect()  # a closed loop may sit in reference cycles until then
    assert not pg._native._idle  # the loop is gone, and its connections with it


def test_postgres_async_duplicates_and_keyed_jobs(pg: SQLStorage) -> None:
    async def main() -> list[str]:
        await pg.aenqueue([job("d1")])
        with pytest.raises(ValueError, match="duplicate"):
            await pg.aenqueue([job("d2"), job("d1")])  # stored: the whole batch is refused
        with pytest.raises(ValueError, match="duplicate"):
            await pg.aenqueue([job("d3"), job("d3")])
        key = Unique("k", frozenset({WAITING}), None)
        # A keyed job takes the sync path (on a thread): the holder's id comes back.
        first = await pg.aenqueue([job("u1", unique=key)])
        second = await pg.aenqueue([job("u2", unique=key)])
        return first + second

    assert asyncio.run(main()) == ["u1", "u1"]
    assert pg.get("d2") is None and pg.get("d3") is None and pg.get("u2") is None


def test_postgres_keeps_a_few_idle_connections_per_loop(pg: SQLStorage) -> None:
    async def main() -> int:
        await asyncio.gather(*(pg.aenqueue([job(f"i{n}")]) for n in range(3 * MAX_IDLE)))
        assert pg._native is not None
        return len(pg._native._idle[asyncio.get_running_loop()])

    assert asyncio.run(main()) == MAX_IDLE
    assert len(pg.list_jobs(limit=100)) == 3 * MAX_IDLE


@pytest.mark.parametrize("name", ["sqlite", "mysql"])
def test_other_sql_databases_declare_no_native_async_enqueue(name: str, tmp_path: Path) -> None:
    with opened_sql(name, tmp_path) as storage:
        assert ASYNC_ENQUEUE not in storage.capabilities
