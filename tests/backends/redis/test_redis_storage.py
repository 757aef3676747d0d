"""RedisStorage at the storage level, on the shared Redis server and on a local cluster.

The ``backend`` fixture is overridden here to run every test twice: on the shared
server (``redis``, as conftest opens it) and on a three-master Redis Cluster that
this module starts from the redis-server binary (``redis-cluster``). A random
differential test checks that every call answers exactly as MemoryStorage does.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from exqueue.errors import ConfigurationError
from exqueue.storage import DEAD, RUNNING, WAITING, Counts, NewJob, Recovered, Storage
from exqueue_memory import MemoryStorage
from exqueue_redis import RedisStorage
from tests.support import services
from tests.support.backends import BackendHandle, backend_factory
from tests.support.redis_servers import RedisClusterProcesses, cluster_processes


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    yield from cluster_processes(tmp_path_factory.mktemp("cluster"))


@pytest.fixture(params=["redis", "redis-cluster"])
def backend(request: Any, tmp_path: Path) -> Iterator[BackendHandle]:
    factory: Callable[[], Storage]
    if request.param == "redis":
        factory = backend_factory("redis", tmp_path)
    else:
        cluster: RedisClusterProcesses = request.getfixturevalue("redis_cluster")
        namespace = f"t{uuid.uuid4().hex[:8]}"
        factory = lambda: RedisStorage(cluster.url, namespace=namespace)  # noqa: E731
    handle = BackendHandle(request.param, factory)
    yield handle
    handle.close_all()


def job(job_id: str, worker: str = "w", run_at: float = 0.0, **kw: Any) -> NewJob:
    fields: dict[str, Any] = {"payload": b"p", "enqueued_at": 0.0, "max_attempts": 3}
    fields.update(kw)
    return NewJob(id=job_id, worker=worker, run_at=run_at, **fields)


def claim(storage: Storage, worker: str = "w", limit: int = 10, now: float = 100.0,
          token: str = "t1", serial: bool = False, owner: str = "node") -> list[str]:  # fmt: skip
    records = storage.claim(
        worker, limit, now=now, owner=owner, token=token, lease_until=now + 30, serial=serial
    )
    return [record.id for record in records]


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


def test_one_mebibyte_payload(storage: Storage) -> None:
    payload = random.Random(1).randbytes(1 << 20)
    storage.enqueue([job("big", payload=payload)])
    [record] = storage.claim("w", 1, now=1.0, owner="o", token="t", lease_until=2.0)
    assert record.payload == payload


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


def test_claim_order_is_run_at_then_seq(storage: Storage) -> None:
    # Equal run_at must come out FIFO even past 10 jobs (no lexical seq order bug).
    storage.enqueue([job(f"j{i}", run_at=5.0) for i in range(25)])
    storage.enqueue(
        [job("early", run_at=1.0), job("later", run_at=7.0), job("future", run_at=50.0)]
    )
    got = claim(storage, limit=100, now=10.0)
    assert got == ["early"] + [f"j{i}" for i in range(25)] + ["later"]
    assert claim(storage, now=49.9) == []
    assert claim(storage, now=50.0, token="t2") == ["future"]


def test_claim_sets_lease_and_attempt(storage: Storage) -> None:
    storage.enqueue([job("a"), job("b"), job("c")])
    records = storage.claim("w", 2, now=1.0, owner="n1", token="tok", lease_until=31.0)
    assert [(r.id, r.state, r.attempt) for r in records] == [("a", RUNNING, 1), ("b", RUNNING, 1)]
    assert {(r.lease_owner, r.lease_token, r.lease_expires) for r in records} == {
        ("n1", "tok", 31.0)
    }
    assert storage.get("a") == records[0]
    assert storage.claim("w", 0, now=1.0, owner="n1", token="x", lease_until=2.0) == []
    assert claim(storage, worker="other") == []


def test_transitions(storage: Storage) -> None:
    storage.enqueue([job("a"), job("b"), job("c"), job("d")])
    assert claim(storage, now=1.0) == ["a", "b", "c", "d"]
    assert storage.complete("a", "t1") is True
    assert storage.get("a") is None
    assert storage.schedule_retry("b", "t1", run_at=9.5, error="first") is True
    b = storage.get("b")
    assert b is not None
    assert (b.state, b.run_at, b.attempt, b.errors, b.lease_token) == (
        WAITING, 9.5, 1, ("first",), None
    )  # fmt: skip
    assert claim(storage, now=9.5, token="t2") == ["b"]
    assert storage.schedule_retry("b", "t2", run_at=10.0, error="second") is True
    assert storage.claim("w", 1, now=10.0, owner="o", token="t3", lease_until=11)[0].attempt == 3
    assert storage.bury("b", "t3", error="third") is True
    b = storage.get("b")
    assert b is not None and (b.state, b.errors) == (DEAD, ("first", "second", "third"))
    assert storage.release("c", "t1") is True
    c = storage.get("c")
    assert c is not None and (c.state, c.attempt, c.run_at, c.lease_owner) == (
        WAITING,
        0,
        0.0,
        None,
    )
    assert storage.extend("t1", ["c", "d", "nope"], 99.0) == ["d"]
    d = storage.get("d")
    assert d is not None and d.lease_expires == 99.0
    assert storage.counts(1.0) == {"w": Counts(waiting=1, running=1, dead=1)}


def test_complete_many_removes_only_held_jobs(storage: Storage) -> None:
    assert isinstance(storage, RedisStorage)
    storage.enqueue([job("a"), job("b"), job("c"), job("d")])
    claim(storage, limit=3)  # a, b, c with t1
    done = storage.complete_many([("a", "t1"), ("b", "bad"), ("d", "t1"), ("c", "t1"), ("a", "t1")])
    assert done == ["a", "c"]
    assert [(r.id, r.state) for r in storage.list_jobs()] == [("b", RUNNING), ("d", WAITING)]
    assert storage.complete_many([]) == []


def test_stale_tokens_are_rejected(storage: Storage) -> None:
    storage.enqueue([job("a", max_attempts=5)])
    assert claim(storage, now=0.0, token="old") == ["a"]  # lease until 30
    assert storage.complete("a", "wrong") is False
    assert storage.recover(30.0, error="lost") == Recovered(waiting=("a",))
    assert claim(storage, now=30.0, token="new") == ["a"]
    for call in (
        lambda: storage.complete("a", "old"),
        lambda: storage.schedule_retry("a", "old", run_at=0.0, error="x"),
        lambda: storage.bury("a", "old", error="x"),
        lambda: storage.release("a", "old"),
    ):
        assert call() is False
    assert storage.extend("old", ["a"], 1e9) == []
    a = storage.get("a")
    assert a is not None and (a.state, a.lease_token, a.attempt, a.errors) == (
        RUNNING, "new", 2, ("lost",)
    )  # fmt: skip
    assert storage.complete("missing", "new") is False
    assert storage.complete("a", "new") is True


def test_recover_expired_and_owner(storage: Storage) -> None:
    storage.enqueue([job("x", max_attempts=1), job("y"), job("z"), job("q", worker="v")])
    storage.claim("w", 1, now=0.0, owner="n1", token="t1", lease_until=10.0)  # x
    storage.claim("w", 1, now=0.0, owner="n2", token="t2", lease_until=10.0)  # y
    storage.claim("w", 1, now=0.0, owner="n1", token="t3", lease_until=50.0)  # z
    storage.claim("v", 1, now=0.0, owner="n2", token="t4", lease_until=50.0)  # q
    assert storage.recover(9.99, error="lost") == Recovered()
    assert storage.recover(10.0, error="lost") == Recovered(waiting=("y",), dead=("x",))
    y = storage.get("y")
    assert y is not None and (y.state, y.run_at, y.errors, y.lease_owner) == (
        WAITING, 10.0, ("lost",), None
    )  # fmt: skip
    assert storage.recover(11.0, owner="n1", error="restart") == Recovered(waiting=("z",))
    assert storage.counts(11.0) == {
        "w": Counts(waiting=2, dead=1),
        "v": Counts(running=1),
    }


def test_serial_runs_only_the_head(storage: Storage) -> None:
    storage.enqueue([job("h", run_at=20.0), job("n1"), job("n2")])
    # The head is scheduled for later: nothing runs, though n1 is runnable.
    assert claim(storage, now=10.0, serial=True) == []
    assert claim(storage, now=20.0, serial=True) == ["h"]
    # The head is running: nothing else.
    assert claim(storage, now=20.0, serial=True, token="t2") == []
    assert storage.bury("h", "t1", error="boom")
    # A dead head blocks the type until it is retried or deleted.
    assert claim(storage, now=20.0, serial=True, token="t3") == []
    assert storage.requeue("h", "h2", now=21.0) == "requeued"
    # Requeued, it keeps its place in line (its seq).
    assert claim(storage, now=21.0, serial=True, token="t4") == ["h2"]
    assert storage.complete("h2", "t4")
    assert claim(storage, now=21.0, serial=True, limit=5, token="t5") == ["n1"]


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


def test_list_jobs_filters_and_pages(storage: Storage) -> None:
    storage.enqueue([job(f"a{i}", worker="a") for i in range(5)])
    storage.enqueue([job(f"b{i}", worker="b") for i in range(5)])
    claim(storage, worker="a", limit=2)
    claim(storage, worker="b", limit=1)
    storage.bury("b0", "t1", error="x")
    assert [r.id for r in storage.list_jobs(limit=3)] == ["a0", "a1", "a2"]
    assert [r.id for r in storage.list_jobs(after_seq=4, limit=3)] == ["a4", "b0", "b1"]
    assert [r.id for r in storage.list_jobs(state="running")] == ["a0", "a1"]
    assert [r.id for r in storage.list_jobs(state="dead")] == ["b0"]
    assert [r.id for r in storage.list_jobs(state="waiting", worker="b", limit=2)] == ["b1", "b2"]
    assert [r.id for r in storage.list_jobs(state="waiting", after_seq=3)] == [
        "a3", "a4", "b1", "b2", "b3", "b4"
    ]  # fmt: skip
    assert storage.list_jobs(worker="nobody") == []
    assert storage.list_jobs(limit=0) == []


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


def test_reopen_keeps_everything(backend: BackendHandle) -> None:
    first = backend.open()
    first.enqueue([job("a"), job("b"), job("c", run_at=50.0)])
    claim(first, limit=1)
    first.close()
    first.close()  # idempotent
    second = backend.reopen()
    assert [(r.id, r.state) for r in second.list_jobs()] == [
        ("a", RUNNING), ("b", WAITING), ("c", WAITING)
    ]  # fmt: skip
    assert second.complete("a", "t1") is True
    second.enqueue([job("d")])
    assert second.get("d") is not None and second.get("d").seq == 4  # type: ignore[union-attr]


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


# -- differential test: RedisStorage answers every call as MemoryStorage does ----


def _random_program(rng: random.Random, steps: int) -> Iterator[tuple[str, tuple[Any, ...]]]:
    ids = [f"j{i}" for i in range(12)]
    workers = ["a", "b", "ü:{x}"]
    tokens = ["t0", "t1", "t2", "t3"]
    now = 0.0
    for _ in range(steps):
        now += rng.choice([0.0, 0.0, 0.5, 1.0, 7.0])
        kind = rng.choice(
            ["enqueue"] * 4 + ["claim"] * 4 + ["complete", "retry", "bury", "release", "extend"] * 2
            + ["recover", "get", "list", "delete", "requeue", "counts"]
        )  # fmt: skip
        token = rng.choice(tokens)
        job_id = rng.choice(ids)
        if kind == "enqueue":
            batch = tuple(
                NewJob(
                    rng.choice(ids), rng.choice(workers), rng.randbytes(rng.randint(0, 8)),
                    run_at=now + rng.choice([0.0, 0.0, 2.0, -1.0]), enqueued_at=now,
                    max_attempts=rng.randint(1, 3),
                )
                for _ in range(rng.randint(0, 3))
            )  # fmt: skip
            yield kind, (batch,)
        elif kind == "claim":
            yield kind, (
                rng.choice(workers), rng.randint(0, 4), now, rng.choice(["n1", "n2"]),
                token, now + rng.choice([1.0, 5.0]), rng.random() < 0.3,
            )  # fmt: skip
        elif kind in ("complete", "release"):
            yield kind, (job_id, token)
        elif kind == "retry":
            yield kind, (job_id, token, now + rng.choice([0.0, 1.0, 3.0]), f"err {now}")
        elif kind == "bury":
            yield kind, (job_id, token, f"dead {now}")
        elif kind == "extend":
            yield kind, (token, rng.sample(ids, 3), now + 5.0)
        elif kind == "recover":
            yield kind, (now, rng.choice([None, "n1", "n2"]), "lost")
        elif kind == "list":
            yield kind, (
                rng.choice([None, WAITING, RUNNING, DEAD]), rng.choice([None, *workers]),
                rng.randint(0, 6), rng.choice([None, 0, 3, 8]),
            )  # fmt: skip
        elif kind == "requeue":
            yield kind, (job_id, rng.choice(ids), now)
        elif kind in ("get", "delete"):
            yield kind, (job_id,)
        else:
            yield kind, (now,)


def _apply(storage: Storage, kind: str, args: tuple[Any, ...]) -> Any:
    try:
        if kind == "enqueue":
            return storage.enqueue(list(args[0]))
        if kind == "claim":
            worker, limit, now, owner, token, until, serial = args
            return storage.claim(
                worker, limit, now=now, owner=owner, token=token, lease_until=until, serial=serial
            )
        if kind == "retry":
            return storage.schedule_retry(args[0], args[1], run_at=args[2], error=args[3])
        if kind == "bury":
            return storage.bury(args[0], args[1], error=args[2])
        if kind == "recover":
            return storage.recover(args[0], owner=args[1], error=args[2])
        if kind == "list":
            state, worker, limit, after = args
            return storage.list_jobs(state=state, worker=worker, limit=limit, after_seq=after)
        if kind == "requeue":
            return storage.requeue(args[0], args[1], now=args[2])
        return getattr(storage, kind)(*args)
    except ValueError as exc:
        return type(exc)


@pytest.mark.parametrize("seed", range(6))
def test_answers_exactly_as_memory_storage(backend: BackendHandle, seed: int) -> None:
    redis_storage = backend.open()
    reference = MemoryStorage()
    for step, (kind, args) in enumerate(_random_program(random.Random(seed), 300)):
        expected = _apply(reference, kind, args)
        got = _apply(redis_storage, kind, args)
        assert got == expected, f"step {step}: {kind}{args}"
    assert redis_storage.list_jobs(limit=1000) == reference.list_jobs(limit=1000)


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
