"""RedisStorage at the storage level, on the shared Redis server and on a local cluster.

The ``backend`` fixture (``tests/backends/redis/conftest.py``) runs every test
twice: on the shared server (``redis``) and on a three-master Redis Cluster
(``redis-cluster``).
The storage contract itself is proved on both by ``tests/conformance``; these
tests keep what is Redis's own: exact float and byte encoding, key names built
from awkward worker names, the Lua scripts' atomicity (a refused batch uses no
seq, ``complete_many`` with a repeated pair), pub/sub wake-ups across clients,
``destroy``, namespaces, a caller's client, and running without hiredis.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis

from exqueue.errors import ConfigurationError
from exqueue.storage import RUNNING, WAITING, Counts, NewJob, Storage
from exqueue_redis import RedisStorage
from tests.backends.redis.helpers import claim, job
from tests.support import services
from tests.support.backends import BackendHandle


def test_enqueue_and_get_round_trip_exactly(storage: Storage) -> None:
    payload = bytes(range(256)) * 3
    storage.enqueue(
        [
            NewJob("a", "w", payload, run_at=0.1 + 0.2, enqueued_at=1712345678.12, max_attempts=6),
            NewJob("b", "w", b"", run_at=5e-324, enqueued_at=-1.5, max_attempts=1),
        ]
    )  # fmt: skip
    a, b = storage.get("a"), storage.get("b")
    assert a is not None and b is not None
    assert (a.payload, a.run_at, a.enqueued_at) == (payload, 0.1 + 0.2, 1712345678.12)
    assert (a.state, a.attempt, a.max_attempts, a.errors) == (WAITING, 0, 6, ())
    assert (a.lease_owner, a.lease_token, a.lease_expires) == (None, None, None)
    assert (b.payload, b.run_at, b.enqueued_at, b.seq) == (b"", 5e-324, -1.5, a.seq + 1)
    assert storage.get("missing") is None


def test_batch_is_all_or_nothing(storage: Storage) -> None:
    storage.enqueue([job("a")])
    with pytest.raises(ValueError):
        storage.enqueue([job("x"), job("y"), job("x")])
    with pytest.raises(ValueError):
        storage.enqueue([job("z"), job("a")])
    assert [r.id for r in storage.list_jobs()] == ["a"]
    # The failed batches used no sequence numbers either, as in MemoryStorage.
    storage.enqueue([job("b")])
    assert [(r.id, r.seq) for r in storage.list_jobs()] == [("a", 1), ("b", 2)]
    storage.enqueue([])
    assert storage.counts(0.0) == {"w": Counts(waiting=2)}


def test_complete_many_removes_only_held_jobs(storage: Storage) -> None:
    assert isinstance(storage, RedisStorage)
    storage.enqueue([job("a"), job("b"), job("c"), job("d")])
    claim(storage, limit=3)  # a, b, c with t1
    done = storage.complete_many([("a", "t1"), ("b", "bad"), ("d", "t1"), ("c", "t1"), ("a", "t1")])
    assert done == ["a", "c"]
    assert [(r.id, r.state) for r in storage.list_jobs()] == [("b", RUNNING), ("d", WAITING)]
    assert storage.complete_many([]) == []


def test_delete_and_requeue(storage: Storage) -> None:
    storage.enqueue([job("a"), job("b"), job("c")])
    claim(storage, limit=2)
    assert storage.delete("a") == "running"
    assert storage.delete("c") == "deleted"
    assert storage.delete("c") == "missing"
    assert storage.requeue("a", "a2", now=1.0) == "not_dead"
    assert storage.requeue("zz", "z2", now=1.0) == "missing"
    storage.bury("a", "t1", error="e1")
    storage.bury("b", "t1", error="e2")
    with pytest.raises(ValueError):
        storage.requeue("a", "b", now=1.0)
    assert storage.requeue("a", "a2", now=7.5) == "requeued"
    assert storage.get("a") is None
    a2 = storage.get("a2")
    assert a2 is not None
    assert (a2.seq, a2.state, a2.attempt, a2.errors, a2.run_at) == (1, WAITING, 0, (), 7.5)
    assert storage.delete("b") == "deleted"
    assert [r.id for r in storage.list_jobs()] == ["a2"]
    assert storage.delete("a2") == "deleted"
    # A worker with no job left is no longer counted.
    assert storage.counts(0.0) == {}


def test_unicode_and_awkward_names(storage: Storage) -> None:
    names = ["tâche:ü", "w:all:x", "{brace}", "日本語", "*?["]
    storage.enqueue([job(f"{name}#id", worker=name) for name in names])
    for name in names:
        [record] = storage.claim(name, 5, now=1.0, owner="ñ", token="t☃", lease_until=2.0)
        assert (record.id, record.worker, record.lease_owner) == (f"{name}#id", name, "ñ")
        assert storage.schedule_retry(record.id, "t☃", run_at=3.0, error="échec ☃")
    assert set(storage.counts(0.0)) == set(names)
    record = storage.get("日本語#id")
    assert record is not None and record.errors == ("échec ☃",)


def test_wait_for_jobs_wakes_on_enqueue_from_another_client(backend: BackendHandle) -> None:
    waiter, producer = backend.open(), backend.open()
    assert isinstance(waiter, RedisStorage)
    producer.enqueue([job("early")])
    # The first wait listens from its start: older transitions do not count.
    assert waiter.wait_for_jobs(0.05) is False
    # From then on a transition between two waits counts for the next one, so
    # a loop of waits (the runtime's listener) misses nothing. A woken wait
    # returns before re-arming (its caller claims a round trip sooner), so the
    # next wait re-arms and reports a possible wake-up at once; then it waits.
    producer.enqueue([job("between1")])
    producer.enqueue([job("between2")])
    assert waiter.wait_for_jobs(5.0) is True
    started = time.monotonic()
    assert waiter.wait_for_jobs(5.0) is True
    assert time.monotonic() - started < 1.0, "the re-arming wait did not return at once"
    assert waiter.wait_for_jobs(0.05) is False
    producer.enqueue([job("after")])
    assert waiter.wait_for_jobs(5.0) is True, "a wake-up after the re-arm was missed"
    assert waiter.wait_for_jobs(5.0) is True
    assert waiter.wait_for_jobs(0.05) is False
    assert producer.delete("after") == "deleted"
    for name in ("between1", "between2"):
        assert producer.delete(name) == "deleted"

    for action in ("enqueue", "retry", "release", "requeue", "recover"):
        if action == "retry":
            claim(producer, token="r")
        woke: list[float] = []

        def wait(woke: list[float] = woke) -> None:
            started = time.monotonic()
            if waiter.wait_for_jobs(5.0):
                woke.append(time.monotonic() - started)

        waiter.wait_for_jobs(0.05)  # re-arms after the previous action's wake-up
        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.2)
        sent = time.monotonic()
        if action == "enqueue":
            producer.enqueue([job("x")])
        elif action == "retry":
            assert producer.schedule_retry("early", "r", run_at=0.0, error="e")
        elif action == "release":
            # Set up without waking: bury, then claim (neither signals).
            claim(producer, token="s")
            sent = time.monotonic()
            assert producer.release("early", "s")
        elif action == "requeue":
            claim(producer, token="q")
            assert producer.bury("early", "q", error="e")
            sent = time.monotonic()
            assert producer.requeue("early", "early2", now=0.0) == "requeued"
        else:
            producer.claim("w", 1, now=0.0, owner="o", token="rc", lease_until=1.0)
            sent = time.monotonic()
            assert producer.recover(5.0, error="lost").waiting
        thread.join(6)
        assert woke, f"not woken by {action}"
        # Woken within a few milliseconds of the transition, not by a poll.
        assert time.monotonic() - sent < 0.5 and woke[0] > 0.15, action


def test_several_waiters_all_wake(backend: BackendHandle) -> None:
    waiters = [backend.open() for _ in range(3)]
    producer = backend.open()
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda s=s: results.append(s.wait_for_jobs(5.0)))  # type: ignore[misc]
        for s in waiters
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    producer.enqueue([job("a")])
    for thread in threads:
        thread.join(6)
    assert results == [True, True, True]
    assert time.monotonic() - started < 1.0


def test_close_ends_a_wait(backend: BackendHandle) -> None:
    storage = backend.open()
    assert isinstance(storage, RedisStorage)
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(storage.wait_for_jobs(10.0)))
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    storage.close()
    thread.join(5)
    assert results == [False] and time.monotonic() - started < 1.0


def test_destroy_removes_every_key(backend: BackendHandle) -> None:
    storage = backend.open()
    assert isinstance(storage, RedisStorage)
    storage.enqueue([job("a"), job("b", worker="v")])
    claim(storage, limit=1)
    storage.destroy()
    keys = list(storage._client.scan_iter(match=f"{{{storage.namespace}}}:*"))
    assert keys == []


def test_bad_namespace_is_refused() -> None:
    url = services.require("redis")
    for namespace in ("", "a{b", "c}"):
        with pytest.raises(ConfigurationError):
            RedisStorage(url, namespace=namespace)


def test_a_given_client_is_used_and_left_open() -> None:
    client = redis.Redis.from_url(services.require("redis"))
    storage = RedisStorage("redis://ignored", client=client, namespace=f"t{uuid.uuid4().hex[:8]}")
    try:
        storage.enqueue([job("a")])
        assert claim(storage) == ["a"]
    finally:
        storage.destroy()
        storage.close()
    assert client.ping() is True
    client.close()
    decoding = redis.Redis.from_url(services.require("redis"), decode_responses=True)
    with pytest.raises(ConfigurationError, match="decode_responses=False"):
        RedisStorage("redis://ignored", client=decoding)
    decoding.close()


def test_commands_are_sent_alike_without_hiredis(
    backend: BackendHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hiredis is optional: without it redis-py packs the same commands."""
    import exqueue_redis

    monkeypatch.setattr(exqueue_redis, "_hiredis_pack", None)
    storage = backend.open()
    storage.enqueue([job("a"), job("b", payload=b"\x00\xffbinary")])
    with pytest.raises(ValueError, match="duplicate"):
        storage.enqueue([job("c"), job("a")])
    assert claim(storage, limit=5) == ["a", "b"]
    assert storage.get("b").payload == b"\x00\xffbinary"  # type: ignore[union-attr]
    assert storage.complete("a", "t1") and storage.complete("b", "t1")
    assert storage.get("c") is None and storage.list_jobs() == []
