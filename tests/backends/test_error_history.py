"""Bounded error history on every backend (issue #13 item 8).

A job keeps its first error and the last ``ERRORS_KEPT`` with the count of all
of them, whichever transition recorded them (retry, bury, recover); one huge
error text is clipped; requeue clears both.
"""

from __future__ import annotations

import json

import pytest
import redis
from sqlalchemy import text

from exqueue.storage import (
    DEAD,
    ERROR_TEXT_LIMIT,
    ERRORS_KEPT,
    WAITING,
    JobRecord,
    NewJob,
    Storage,
)
from exqueue_redis import RedisStorage
from exqueue_sql import SQLStorage
from tests.support import services
from tests.support.backends import BackendHandle


def _fail(storage: Storage, job_id: str, times: int, *, last: str = "retry") -> None:
    """Claim and fail ``job_id`` ``times`` times: error ``e1`` .. ``e<times>``.

    Failures alternate between a retry and a lost lease (recover); the last one
    is ``last``: "retry", "bury" or "recover".
    """
    for n in range(1, times + 1):
        now = float(n * 10)
        token = f"t{n}"
        got = storage.claim("w", 1, now=now, owner="node", token=token, lease_until=now + 5)
        assert [r.id for r in got] == [job_id]
        kind = last if n == times else ("recover" if n % 3 == 0 else "retry")
        if kind == "retry":
            assert storage.schedule_retry(job_id, token, run_at=now + 1, error=f"e{n}")
        elif kind == "bury":
            assert storage.bury(job_id, token, error=f"e{n}")
        else:
            found = storage.recover(now + 5, error=f"e{n}")
            assert job_id in found.waiting + found.dead


def _get(storage: Storage, job_id: str) -> JobRecord:
    record = storage.get(job_id)
    assert record is not None
    return record


@pytest.mark.parametrize("last", ["retry", "bury", "recover"])
def test_thirty_failures_keep_the_first_and_last_twenty_with_the_count(
    storage: Storage, last: str
) -> None:
    storage.enqueue([NewJob("a", "w", b"p", run_at=0.0, enqueued_at=0.0, max_attempts=1000)])
    _fail(storage, "a", 30, last=last)
    record = _get(storage, "a")
    assert record.state == (DEAD if last == "bury" else WAITING)
    assert record.errors == ("e1", *(f"e{n}" for n in range(31 - ERRORS_KEPT, 31)))
    assert record.error_count == 30
    assert record.attempt == 30
    assert [r.errors for r in storage.list_jobs()] == [record.errors]
    assert [r.error_count for r in storage.list_jobs()] == [30]
    if last == "bury":
        # Requeue clears both; counting starts again from nothing.
        assert storage.requeue("a", "a2", now=1000.0) == "requeued"
        again = _get(storage, "a2")
        assert (again.errors, again.error_count, again.attempt) == ((), 0, 0)
        got = storage.claim("w", 1, now=1000.0, owner="node", token="x", lease_until=2000.0)
        assert [r.error_count for r in got] == [0]
        assert storage.schedule_retry("a2", "x", run_at=1000.0, error="fresh")
        assert (_get(storage, "a2").errors, _get(storage, "a2").error_count) == (("fresh",), 1)


def test_a_huge_error_text_is_clipped_keeping_both_ends(storage: Storage) -> None:
    storage.enqueue([NewJob("a", "w", b"p", run_at=0.0, enqueued_at=0.0, max_attempts=9)])
    storage.claim("w", 1, now=1.0, owner="node", token="t", lease_until=9.0)
    huge = "HEAD" + "é" * (ERROR_TEXT_LIMIT * 2) + "TAIL"
    assert storage.schedule_retry("a", "t", run_at=1.0, error=huge)
    (stored,) = _get(storage, "a").errors
    assert len(stored.encode()) <= ERROR_TEXT_LIMIT
    assert stored.startswith("HEADé") and stored.endswith("éTAIL")
    assert "bytes cut" in stored


# -- stores written before the bound -------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mysql"], indirect=True)
def test_a_sql_store_from_before_the_count_is_upgraded_in_place(backend: BackendHandle) -> None:
    first = backend.open()
    assert isinstance(first, SQLStorage)
    first.enqueue([NewJob(i, "w", i.encode(), 0.0, 0.0, 1000) for i in ("a", "b")])
    first.claim("w", 1, now=1.0, owner="node", token="t", lease_until=99.0)
    table = first.engine.dialect.identifier_preparer.quote(f"{first.prefix}jobs")
    old = json.dumps([f"old{n}" for n in range(1, 31)])
    with first.engine.begin() as conn:
        # The layout of the earlier version: no error_count, every error in the list.
        conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN error_count")
        conn.execute(text(f"UPDATE {table} SET errors = :e WHERE id = 'a'"), {"e": old})
    first.engine.dispose()

    store = backend.open()
    assert isinstance(store, SQLStorage)
    a = _get(store, "a")
    assert a.errors == ("old1", *(f"old{n}" for n in range(11, 31)))
    assert (a.error_count, a.state, a.lease_token) == (30, "running", "t")
    b = _get(store, "b")
    assert (b.payload, b.state, b.errors, b.error_count) == (b"b", WAITING, (), 0)
    assert store.schedule_retry("a", "t", run_at=2.0, error="new")
    a = _get(store, "a")
    assert a.errors == ("old1", *(f"old{n}" for n in range(12, 31)), "new")
    assert a.error_count == 31
    with store.engine.connect() as conn:
        stored = conn.exec_driver_sql(f"SELECT errors FROM {table} WHERE id = 'a'").scalar_one()
    assert len(json.loads(stored)) == ERRORS_KEPT + 1  # trimmed on its next write


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
def test_a_redis_hash_from_before_the_bound_is_read_and_trimmed(backend: BackendHandle) -> None:
    store = backend.open()
    assert isinstance(store, RedisStorage)
    store.enqueue([NewJob("a", "w", b"p", 0.0, 0.0, 1000)])
    store.claim("w", 1, now=1.0, owner="node", token="t", lease_until=99.0)
    client = redis.Redis.from_url(services.require("redis"))
    key = f"{{{store.namespace}}}:job:a"
    # The layout of the earlier version: every error in its own field.
    client.hset(key, mapping={"errors": 30, **{f"error:{n}": f"old{n}" for n in range(1, 31)}})
    a = _get(store, "a")
    assert a.errors == ("old1", *(f"old{n}" for n in range(11, 31)))
    assert a.error_count == 30
    assert store.schedule_retry("a", "t", run_at=2.0, error="new")
    a = _get(store, "a")
    assert a.errors == ("old1", *(f"old{n}" for n in range(12, 31)), "new")
    assert a.error_count == 31
    names = {f.decode() if isinstance(f, bytes) else f for f in client.hkeys(key)}
    fields = {name for name in names if name.startswith("error:")}
    assert fields == {f"error:{n}" for n in (1, *range(12, 32))}
