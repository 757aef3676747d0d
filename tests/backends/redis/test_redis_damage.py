"""Issue 13, items 1 and 3 on Redis: a script applies whole or not at all, and one
damaged job hash (corrupt or hostile) becomes dead alone while its neighbours run.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from typing import cast

import pytest
import redis

import exqueue
from exqueue.storage import DEAD, RUNNING, WAITING, NewJob
from exqueue_redis import RedisStorage
from tests.support import services


@pytest.fixture
def storage() -> Iterator[RedisStorage]:
    store = RedisStorage(services.require("redis"), namespace=f"t{uuid.uuid4().hex[:10]}")
    yield store
    store.destroy()
    store.close()


def new(job_id: str, run_at: float = 0.0, max_attempts: int = 3) -> NewJob:
    return NewJob(job_id, "w", b"[[], {}]", run_at, 0.0, max_attempts)


def raw(storage: RedisStorage) -> redis.Redis:
    return redis.Redis.from_url(services.require("redis"))


def key(storage: RedisStorage, name: str) -> str:
    return f"{{{storage.namespace}}}:{name}"


def claim(storage: RedisStorage, limit: int = 10, now: float = 100.0) -> list[str]:
    records = storage.claim("w", limit, now=now, owner="n", token="t", lease_until=now + 30)
    return [record.id for record in records]


# -- item 1: numbers are checked before a script; a script checks before writing --


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_bad_number_stores_nothing(storage: RedisStorage, bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        storage.enqueue([new("a"), new("b", run_at=bad)])
    with pytest.raises(ValueError, match="finite"):
        storage.enqueue([NewJob("c", "w", b"p", 0.0, bad, 3)])
    assert storage.list_jobs() == []
    assert raw(storage).keys(key(storage, "job:*")) == []
    storage.enqueue([new("a")])
    with pytest.raises(ValueError, match="finite"):
        storage.claim("w", 5, now=100.0, owner="n", token="t", lease_until=bad)
    assert [(j.id, j.state, j.attempt) for j in storage.list_jobs()] == [("a", WAITING, 0)]
    assert claim(storage) == ["a"]
    with pytest.raises(ValueError, match="finite"):
        storage.schedule_retry("a", "t", run_at=bad, error="boom")
    with pytest.raises(ValueError, match="finite"):
        storage.extend("t", ["a"], bad)
    job = storage.get("a")
    assert job is not None and (job.state, job.lease_expires, job.errors) == (RUNNING, 130.0, ())
    assert storage.complete("a", "t")


def test_a_script_refuses_bad_input_before_its_first_write(storage: RedisStorage) -> None:
    # Straight to the scripts, past the Python checks: a caller of another
    # language or version must not be able to leave half a transition behind.
    storage.enqueue([new("a"), new("b")])
    assert claim(storage, limit=1) == ["a"]
    for script, args in [
        ("RETRY", ("a", "t", "nan", "boom")),
        ("RETRY", ("a", "t", "inf", "boom")),
        ("EXTEND", ("t", "nan", "a")),
        ("CLAIM", ("w", 5, "100.0", "n", "t2", "nan", "0")),
        ("ENQUEUE", (2, "c", "w", "p", "1.0", "0.0", 3, "", "d", "w", "p", "0x10", "0.0", 3, "")),
        ("ENQUEUE", (1, "e", "w", "p", "1.0", "0.0", "nan", "")),
        ("ENQUEUE", (1, "e", "w", "p", "1.0", "0.0", 3, '["0","","","nan","0","","",""]')),
        ("ENQUEUE", (1, "e", "w", "p", "1.0", "0.0", 3, '["2147483648","","","","0","","",""]')),
        ("ENQUEUE", (1, "e", "w", "p", "1.0", "0.0", 3, '["0","{\\"a\\":1}","","","0","","",""]')),
        ("RECOVER", ("nan", "lost", "", "0")),
    ]:
        with pytest.raises(redis.ResponseError, match="exqueue: .* must be"):
            storage._run(script, *args)
    a, b = storage.get("a"), storage.get("b")
    assert a is not None and (a.state, a.attempt, a.errors, a.lease_token) == (RUNNING, 1, (), "t")
    assert b is not None and (b.state, b.attempt) == (WAITING, 0)
    assert raw(storage).zscore(key(storage, "leases"), "a") == 130.0
    assert [j.id for j in storage.list_jobs()] == ["a", "b"]
    assert raw(storage).keys(key(storage, "job:[cde]")) == []
    # ...and the job that was running is still the holder's to finish or to recover.
    assert storage.schedule_retry("a", "t", run_at=5.0, error="boom")
    assert sorted(claim(storage)) == ["a", "b"]


# -- item 3: one damaged job dies alone ------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("attempt", "x"), ("seq", "nan"), ("max_attempts", ""), ("run_at", "soon"), ("id", "")],
)
def test_a_damaged_job_dies_alone_at_claim(storage: RedisStorage, field: str, value: str) -> None:
    storage.enqueue([new(f"j{n}") for n in range(5)])
    raw(storage).hset(key(storage, "job:j2"), field, value)
    assert claim(storage) == ["j0", "j1", "j3", "j4"]
    dead = storage.get("j2")
    assert dead is not None and dead.state == DEAD
    assert dead.errors[-1].startswith("damaged stored job: ") and field in dead.errors[-1]
    assert [j.id for j in storage.list_jobs(state=DEAD)] == ["j2"]
    assert storage.counts(100.0)["w"].dead == 1
    for job_id in ("j0", "j1", "j3", "j4"):
        assert storage.complete(job_id, "t")
    assert storage.delete("j2") == "deleted"
    assert storage.list_jobs() == [] and storage.counts(100.0) == {}


def test_a_job_damaged_while_running_dies_alone(storage: RedisStorage) -> None:
    storage.enqueue([new(f"j{n}") for n in range(4)])
    assert claim(storage) == ["j0", "j1", "j2", "j3"]
    client = raw(storage)
    client.hset(key(storage, "job:j0"), "seq", "garbage")
    client.hset(key(storage, "job:j1"), "attempt", "garbage")
    assert storage.schedule_retry("j0", "t", run_at=1.0, error="boom")
    assert storage.release("j1", "t")
    for job_id in ("j0", "j1"):
        job = storage.get(job_id)
        assert job is not None and job.state == DEAD and "damaged stored job" in job.errors[-1]
        assert client.zscore(key(storage, "leases"), job_id) is None
    # Recovery of a lost node: the damaged job is dead, its neighbour waits again.
    client.hset(key(storage, "job:j2"), "max_attempts", "-1")
    recovered = storage.recover(1000.0, error="worker lost")
    assert (recovered.waiting, recovered.dead) == (("j3",), ("j2",))
    assert claim(storage, now=1000.0) == ["j3"]
    assert [j.id for j in storage.list_jobs(state=DEAD)] == ["j0", "j1", "j2"]


def test_listing_shows_a_damaged_waiting_job(storage: RedisStorage) -> None:
    storage.enqueue([new("a", run_at=10**6), new("b", run_at=10**6)])
    raw(storage).hset(key(storage, "job:a"), mapping={"enqueued_at": "x", "errors": "y"})
    jobs = storage.list_jobs()
    assert [j.id for j in jobs] == ["a", "b"]
    assert "enqueued_at" in jobs[0].errors[-1] and "errors" in jobs[0].errors[-1]
    got = storage.get("a")
    assert got is not None and got.errors[-1].startswith("damaged stored job")
    queue = exqueue.Queue(storage)
    assert [j.id for j in queue.jobs()] == ["a", "b"]


def test_queue_runs_the_good_neighbours_of_a_damaged_job(storage: RedisStorage) -> None:
    queue = exqueue.Queue(storage)
    ran: list[int] = []

    @queue.worker(name="w", max_retries=0, concurrency=1)
    def record(n: int) -> None:
        ran.append(n)

    ids = [record.enqueue(n) for n in range(5)]
    raw(storage).hset(key(storage, f"job:{ids[2]}"), "attempt", "oops")
    queue.drain(timeout=30)
    assert sorted(ran) == [0, 1, 3, 4]
    dead = queue.jobs(state="dead")
    assert [j.id for j in dead] == [ids[2]] and "attempt" in (dead[0].last_error or "")
    assert queue.jobs(state="running") == [] and queue.jobs(state="waiting") == []


def test_start_survives_a_damaged_job_left_by_a_crashed_node(storage: RedisStorage) -> None:
    storage.enqueue([new("crashed-1"), new("crashed-2")])
    storage.claim("w", 2, now=1.0, owner="lost-node", token="t", lease_until=2.0)
    raw(storage).hset(key(storage, "job:crashed-1"), "seq", "garbage")
    queue = exqueue.Queue(storage, lease=5.0)
    ran: list[str] = []

    @queue.worker(name="w", concurrency=1)
    def job() -> None:
        ran.append("ran")

    queue.start()  # recovers the lost node's expired leases first
    try:
        deadline = time.monotonic() + 30
        while not ran:
            assert time.monotonic() < deadline, "the sound neighbour was not recovered and run"
            time.sleep(0.05)
    finally:
        queue.stop(timeout=5)
    dead = storage.get("crashed-1")
    assert dead is not None and dead.state == DEAD and "seq" in dead.errors[-1]
    assert storage.get("crashed-2") is None and ran == ["ran"]


def test_a_job_whose_id_is_not_text_dies_alone(storage: RedisStorage) -> None:
    # Written around the API, as a hostile client could: the id is not UTF-8.
    storage.enqueue([new("a"), new("b")])
    client, bad = raw(storage), b"\xff\xfe"
    client.hset(
        key(storage, "job:").encode() + bad,
        mapping={
            "id": bad, "seq": "99", "worker": "w", "payload": "[[], {}]", "state": "waiting",
            "attempt": "0", "max_attempts": "3", "run_at": "0.0", "enqueued_at": "0.0",
            "errors": "0",
        },
    )  # fmt: skip
    client.zadd(key(storage, "sched:w"), {b"%016d" % 99 + bad: 0.0})
    client.zadd(key(storage, "all:w"), {bad: 99})
    assert sorted(claim(storage)) == ["a", "b"]
    dead = storage.list_jobs(state=DEAD)
    assert len(dead) == 1 and "damaged stored job" in dead[0].errors[-1]
    assert client.zcard(key(storage, "leases")) == 2  # only a and b are held


def test_a_vanished_serial_head_does_not_block_its_type(storage: RedisStorage) -> None:
    storage.enqueue([new("first"), new("second")])
    raw(storage).delete(key(storage, "job:first"))  # lost from under the index
    claimed = storage.claim("w", 1, now=100.0, owner="n", token="t", lease_until=130.0, serial=True)
    assert claimed == []  # this claim drops the stale head...
    claimed = storage.claim("w", 1, now=100.0, owner="n", token="t", lease_until=130.0, serial=True)
    assert [job.id for job in claimed] == ["second"]  # ...and the next one moves on


def test_a_claim_defines_the_damage_helpers_only_when_it_meets_a_damaged_job() -> None:
    # The claim's text puts the helpers only the damage rules need inside the
    # block it runs on a damaged job, those of other rare paths (a serial claim's
    # unwait) in theirs, and the ones every claim uses once, up front.
    from exqueue_redis import _claim_script
    from exqueue_redis._prelude import with_prelude

    text = with_prelude(_claim_script.CLAIM)
    head, rest = text.split("\nif damaged then\n", 1)
    inner = rest.split("  for _, d in ipairs(damaged) do\n", 1)[0]
    for helper in ("damage_of", "damage", "bury_damaged", "add_error"):
        assert f"local function {helper}(" not in head
        assert inner.count(f"local function {helper}(") == 1
    top = text.split("\nlocal worker, limit", 1)[0]  # before the claim's first statement
    for helper in ("jkey", "int", "num"):
        assert text.count(f"local function {helper}(") == 1
        assert f"local function {helper}(" in top
    for helper in ("unwait", "smember", "rmember"):
        assert f"local function {helper}(" not in top
        assert f"local function {helper}(" in text


def test_a_ready_member_of_another_seq_is_dropped_even_when_its_digits_end_alike(
    storage: RedisStorage,
) -> None:
    # The claim matches a member's seq digits against the stored seq's text: a
    # member left by an earlier job of the same id whose seq (1000012) ends in
    # the digits of the stored one (12) is stale, not that job's.
    client = raw(storage)
    client.set(key(storage, "seq"), 11)
    storage.enqueue([new("a")])
    ready = key(storage, "ready:w")
    [member] = cast(list[bytes], client.zrange(ready, 0, -1))
    assert member[8:] == b"0000000000000012a"
    client.zadd(ready, {member[:8] + b"0000000001000012a": -1})  # looked at first
    claimed = storage.claim("w", 1, now=100.0, owner="n", token="t", lease_until=130.0)
    assert [(job.id, job.seq) for job in claimed] == [("a", 12)]
    assert client.zcard(ready) == 0
    assert storage.complete("a", "t")
