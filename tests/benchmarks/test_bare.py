"""The bare bound keeps the promise it is measured for: a job is leased before it runs
(token, expiry, attempt, the running set) and a success is recorded only under the
job's own token, so a worker whose lease moved on cannot delete the job."""

from __future__ import annotations

import json
import threading
import time
import uuid

import psycopg
import pytest
import redis

from benchmarks import bare
from tests.support import services


@pytest.fixture
def store() -> tuple[redis.Redis, str, list[str]]:
    client = redis.Redis.from_url(services.require("redis"))
    prefix = f"exqbaretest:{uuid.uuid4().hex[:8]}:"
    keys = [prefix + "ready", prefix + "running"]
    for n in (0, 1):
        client.hset(f"{prefix}{n}", "payload", bare.payload(n))
    client.zadd(keys[0], {"0": 0, "1": 1})
    yield client, prefix, keys
    client.delete(*keys, f"{prefix}0", f"{prefix}1")
    client.close()


def test_one_call_leases_the_next_job_and_fences_the_success(store) -> None:  # type: ignore[no-untyped-def]
    client, prefix, keys = store
    one = client.register_script(bare.FINISH_AND_CLAIM)
    job_id, raw = one(keys=keys, args=[prefix, "", "", "t1", "100.5"])
    assert job_id == b"0" and json.loads(raw) == [[0], {}]
    assert client.hmget(f"{prefix}0", "token", "lease", "attempt") == [b"t1", b"100.5", b"1"]
    assert client.zscore(keys[1], "0") == 100.5
    # A success under a token the job no longer holds deletes nothing.
    job_id, _ = one(keys=keys, args=[prefix, "0", "stale", "t2", "101"])
    assert job_id == b"1" and client.exists(f"{prefix}0") and client.zscore(keys[1], "0")
    # Its own token records it; with nothing waiting the call claims nothing.
    assert one(keys=keys, args=[prefix, "1", "t2", "t3", "102"]) is None
    assert not client.exists(f"{prefix}1") and client.zscore(keys[1], "1") is None


def test_the_pump_claims_up_to_what_it_asks_and_records_each_success_under_its_token(store) -> None:  # type: ignore[no-untyped-def]
    client, prefix, keys = store
    many = client.register_script(bare.FINISH_AND_CLAIM_MANY)
    assert many(keys=keys, args=[prefix, 1, "t1", "100"]) == [b"0", bare.payload(0).encode()]
    flat = many(keys=keys, args=[prefix, 5, "t2", "100", "0", "t1"])
    assert flat == [b"1", bare.payload(1).encode()] and not client.exists(f"{prefix}0")
    assert many(keys=keys, args=[prefix, 0, "t3", "100", "1", "wrong"]) == []
    assert client.hget(f"{prefix}1", "token") == b"t2" and client.zcard(keys[1]) == 1


def test_the_threaded_pump_leases_only_for_free_threads_and_records_every_success(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = services.require("redis")
    client = redis.Redis.from_url(url)
    prefix = f"exqbaretest:{uuid.uuid4().hex[:8]}:"
    monkeypatch.setattr(bare, "PREFIX", prefix)
    monkeypatch.setattr(bare, "READY", prefix + "ready")
    monkeypatch.setattr(bare, "RUNNING", prefix + "running")
    monkeypatch.setattr(bare.common, "redis_client", lambda: redis.Redis.from_url(url))
    jobs = 12
    names = [f"{prefix}{n}" for n in range(jobs)]
    for n in range(jobs):
        client.hset(f"{prefix}{n}", "payload", bare.payload(n))
    client.zadd(prefix + "ready", {str(n): n for n in range(jobs)})
    lock = threading.Lock()
    ran: list[int] = []
    leased: list[int] = []
    now = most = 0

    def body(raw: bytes) -> None:
        nonlocal now, most
        with lock:
            now += 1
            most = max(most, now)
            leased.append(client.zcard(prefix + "running"))
        time.sleep(0.005)
        with lock:
            now -= 1
            ran.append(json.loads(raw)[0][0])

    monkeypatch.setattr(bare, "run_payload", body)
    stop = threading.Event()
    pump = threading.Thread(target=bare.redis_pump, args=(3, stop), daemon=True)
    pump.start()
    try:
        deadline = time.monotonic() + 10
        while (client.exists(*names) or client.zcard(prefix + "running")) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.01)
        assert sorted(ran) == list(range(jobs))
        # Jobs ran side by side, never more than the threads, and every job running
        # was leased while no more were leased than threads (prefetch=0).
        assert 1 < most <= 3
        assert min(leased) >= 1 and max(leased) <= 3
        assert client.zcard(prefix + "running") == 0 and client.zcard(prefix + "ready") == 0
    finally:
        stop.set()
        pump.join(5)
        client.delete(prefix + "ready", prefix + "running", *names)
        client.close()


def test_the_postgres_statement_leases_and_fences_the_same_way() -> None:
    url = services.require("postgres").replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {bare.TABLE}")
        for statement in bare.PG_SCHEMA:
            conn.execute(statement)
        try:
            conn.execute(f"INSERT INTO {bare.TABLE} (id, payload) VALUES (0, 'a'), (1, 'b')")

            def call(done: int, old: str, token: str) -> tuple[int, str] | None:
                params = {"done": done, "old": old, "token": token, "lease": 100.0}
                return conn.execute(bare.PG_FINISH_AND_CLAIM, params).fetchone()

            assert call(-1, "", "t1") == (0, "a")
            assert call(0, "stale", "t2") == (1, "b")
            rows = conn.execute(f"SELECT id, token, attempt FROM {bare.TABLE} ORDER BY id")
            assert rows.fetchall() == [(0, "t1", 1), (1, "t2", 1)]
            assert call(1, "t2", "t3") is None
            assert conn.execute(f"SELECT id FROM {bare.TABLE}").fetchall() == [(0,)]
        finally:
            conn.execute(f"DROP TABLE IF EXISTS {bare.TABLE}")


def test_the_script_store_claims_in_order_and_deletes_only_under_the_jobs_token() -> None:
    """``benchmarks.bare.ScriptStore``: the bound's scripts behind the calls that
    ``benchmarks.redisinstr`` counts (``--tree bound=bare``)."""
    from types import SimpleNamespace

    namespace = f"exqbaretest:{uuid.uuid4().hex[:8]}"
    store = bare.ScriptStore(services.require("redis"), namespace)
    try:
        store.enqueue([SimpleNamespace(id=f"j{n}", payload=bare.payload(n)) for n in range(3)])
        first = store.claim("w", 2, now=1.0, owner="node", token="t1", lease_until=50.0)
        assert [(job.id, json.loads(job.payload)) for job in first] == [
            ("j0", [[0], {}]),
            ("j1", [[1], {}]),
        ]
        assert store.client.hmget(f"{namespace}:j0", "token", "attempt") == [b"t1", b"1"]
        store.complete_many([("j0", "t1"), ("j1", "stale")], now=2.0)
        assert not store.client.exists(f"{namespace}:j0")
        assert store.client.exists(f"{namespace}:j1")  # another token: not deleted
        rest = store.claim("w", 5, now=3.0, owner="node", token="t2", lease_until=60.0)
        assert [job.id for job in rest] == ["j2"]
        assert store.complete("j2", "t2", now=4.0)
        assert not store.client.exists(f"{namespace}:j2")
        assert store.claim("w", 5, now=5.0, owner="node", token="t3", lease_until=70.0) == []
    finally:
        keys = list(store.client.scan_iter(f"{namespace}:*"))
        if keys:
            store.client.delete(*keys)
        store.close()
