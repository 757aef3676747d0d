"""RedisStorage's protocol-2 layout, on the shared server and on a local cluster.

The generic rules (priority order, unique states and periods, expiry) are proved
by the conformance suite; these tests keep what is Redis's own: the ready and
scheduled sets (promotion, a clock moved back, float and negative orderings in
the byte-encoded members), completion markers pruned by later completes, the
unique index across awkward worker names, meta stored as JSON, and damage in
the new fields.
"""

from __future__ import annotations

import json
import uuid

import pytest
import redis

from exqueue.storage import (
    DEAD,
    EXPIRED,
    PRIORITY_MAX,
    PRIORITY_MIN,
    PROTOCOL_2,
    RUNNING,
    WAITING,
    NodeInfo,
    ScheduleSettings,
    Storage,
    TypeSettings,
    Unique,
)
from exqueue_redis import RedisStorage
from tests.backends.redis.helpers import claim, job
from tests.support import services
from tests.support.backends import BackendHandle


def test_declares_protocol_2(storage: Storage) -> None:
    assert PROTOCOL_2 <= storage.capabilities


def test_claim_order_is_priority_then_run_at_then_seq(storage: Storage) -> None:
    # Due at enqueue (ready set) and later (scheduled set, promoted by the claim),
    # negative and fractional run_at, the priority limits.
    storage.enqueue([
        job("late-low", run_at=50.0, priority=5),
        job("now-low", priority=5),
        job("neg-run", run_at=-3.5, priority=5),
        job("max", priority=PRIORITY_MAX),
        job("min", run_at=99.0, priority=PRIORITY_MIN),
        job("tiny-run", run_at=5e-324, priority=5),
        job("zero", priority=0),
        job("zero-later", priority=0),
        job("neg", run_at=1e-9, priority=-1),
        job("future", run_at=101.0, priority=PRIORITY_MIN),
    ])  # fmt: skip
    order = ["min", "neg", "zero", "zero-later", "neg-run", "now-low", "tiny-run", "late-low"]
    assert claim(storage, limit=3) == order[:3]
    assert claim(storage, limit=100) == [*order[3:], "max"]
    assert claim(storage, now=101.0) == ["future"]


def test_a_job_not_yet_due_in_the_ready_set_waits(storage: Storage) -> None:
    # Enqueued "now" at 10 (so ready at once), claimed by a clock that reads 5.
    storage.enqueue(
        [job("a", run_at=10.0, enqueued_at=10.0), job("b", run_at=1.0, enqueued_at=1.0)]
    )
    assert claim(storage, now=5.0) == ["b"]
    counts = storage.counts(5.0)["w"]
    assert (counts.waiting, counts.scheduled, counts.running) == (0, 1, 1)
    assert claim(storage, now=10.0) == ["a"]


def test_serial_ignores_priority_and_takes_the_head(storage: Storage) -> None:
    storage.enqueue([job("first", priority=9), job("second", priority=-9, run_at=0.0)])
    assert claim(storage, serial=True) == ["first"]
    assert claim(storage, serial=True, token="t2") == []
    assert storage.complete("first", "t1", now=100.0)
    assert claim(storage, serial=True, token="t2") == ["second"]


def test_retried_jobs_come_back_in_order(storage: Storage) -> None:
    storage.enqueue([job("a", priority=1), job("b", priority=2), job("c", priority=0)])
    assert claim(storage) == ["c", "a", "b"]
    assert storage.schedule_retry("b", "t1", run_at=100.0, error="x")
    assert storage.schedule_retry("a", "t1", run_at=150.0, error="x")
    assert storage.release("c", "t1")
    assert claim(storage, now=120.0, token="t2") == ["c", "b"]
    assert claim(storage, now=200.0, token="t3") == ["a"]


def test_fields_round_trip_and_requeue_keeps_them(storage: Storage) -> None:
    meta = {"trace": "00-abc-01", "tenant": 'åäö "quoted" {}', "": ""}
    storage.enqueue([
        job("a", priority=-7, meta=meta, timeout=2.5, expires_at=1e9,
            unique=Unique("k:1", frozenset({"running", "dead"}), 30.0)),
    ])  # fmt: skip
    a = storage.get("a")
    assert a is not None
    assert (a.priority, dict(a.meta), a.timeout, a.expires_at, a.unique_key) == (
        -7, meta, 2.5, 1e9, "k:1",
    )  # fmt: skip
    assert claim(storage) == ["a"]
    assert storage.bury("a", "t1", error="boom")
    assert storage.requeue("a", "a2", now=200.0) == "requeued"
    a2 = storage.get("a2")
    assert a2 is not None and a2.state == WAITING
    assert (a2.priority, dict(a2.meta), a2.timeout, a2.expires_at, a2.unique_key) == (
        -7, meta, 2.5, None, "k:1",
    )  # fmt: skip
    # The requeued job holds the key under its new id.
    assert storage.enqueue([job("dup", unique=Unique("k:1"))]) == ["a2"]


def test_list_jobs_by_tag(storage: Storage) -> None:
    storage.enqueue([
        job("a", meta={"tenant": "x"}), job("b", meta={"tenant": "y"}), job("c"),
        job("d", worker="v", meta={"tenant": "x", "more": "1"}),
    ])  # fmt: skip
    assert [j.id for j in storage.list_jobs(tag=("tenant", "x"))] == ["a", "d"]
    assert [j.id for j in storage.list_jobs(tag=("tenant", "x"), worker="w")] == ["a"]
    assert [j.id for j in storage.list_jobs(tag=("tenant", "x"), limit=1)] == ["a"]
    assert storage.list_jobs(tag=("tenant", "z")) == []
    assert claim(storage) == ["a", "b", "c"]
    assert [j.id for j in storage.list_jobs(tag=("tenant", "x"), state=RUNNING)] == ["a"]


def test_expire_takes_only_waiting_jobs(storage: Storage) -> None:
    storage.enqueue([
        job("soon", expires_at=20.0), job("sched", run_at=500.0, expires_at=25.0),
        job("later", expires_at=1000.0), job("runs", expires_at=30.0),
    ])  # fmt: skip
    assert claim(storage, now=5.0, limit=10) == ["soon", "later", "runs"]
    assert storage.release("soon", "t1")
    assert claim(storage, now=15.0, token="t2") == ["soon"]  # not yet expired at 15
    assert storage.release("soon", "t2")
    assert claim(storage, now=50.0, token="t3") == []  # expired: never claimed
    assert storage.expire(50.0, limit=1) == ["soon"]  # oldest seq first
    assert storage.expire(50.0) == ["sched"]
    assert storage.expire(50.0) == []
    dead = storage.get("sched")
    assert dead is not None and (dead.state, dead.errors, dead.attempt) == (DEAD, (EXPIRED,), 0)
    counts = storage.counts(50.0)["w"]
    assert (counts.waiting, counts.scheduled, counts.running, counts.dead) == (0, 0, 2, 2)
    assert storage.schedule_retry("runs", "t1", run_at=60.0, error="x")
    assert storage.expire(70.0) == ["runs"]


def test_unique_keys_by_worker_with_awkward_names(storage: Storage) -> None:
    # (worker "a:1", key "b") and (worker "a", key "1:b") must not meet.
    assert storage.enqueue([
        job("x", worker="a:1", unique=Unique("b")), job("y", worker="a", unique=Unique("1:b")),
        job("z", worker="a", unique=Unique("1:b")), job("é", worker="{w}", unique=Unique("}{")),
    ]) == ["x", "y", "y", "é"]  # fmt: skip
    assert storage.get("z") is None
    assert storage.enqueue([job("é2", worker="{w}", unique=Unique("}{"))]) == ["é"]


def test_completion_markers_use_the_jobs_own_period(storage: Storage) -> None:
    period = Unique("k", period=10.0)
    storage.enqueue([job("a", unique=period)])
    assert claim(storage) == ["a"]
    assert storage.complete("a", "t1", now=100.0)
    assert storage.enqueue([job("b", enqueued_at=105.0, unique=period)]) == ["a"]
    # The completed job's own period decides how long it holds the key.
    shorter = Unique("k", period=1.0)
    assert storage.enqueue([job("d", enqueued_at=109.0, unique=shorter)]) == ["a"]
    longer = Unique("k", period=1000.0)
    assert storage.enqueue([job("c", enqueued_at=110.0, unique=longer)]) == ["c"]


def test_markers_past_their_period_are_dropped(storage: Storage, backend: BackendHandle) -> None:
    assert isinstance(storage, RedisStorage)
    storage.enqueue([job(f"m{i}", unique=Unique(f"k{i}", period=5.0)) for i in range(3)])
    storage.enqueue([job("other", unique=Unique("k-other", period=5.0)), job("plain")])
    assert claim(storage) == ["m0", "m1", "m2", "other", "plain"]
    assert storage.complete_many([("m0", "t1"), ("m1", "t1")], now=100.0) == ["m0", "m1"]
    client = storage._client
    prefix = storage._prefix
    assert client.zcard(prefix + "udone") == 2
    assert storage.complete("m2", "t1", now=200.0)  # drops the two older ones
    assert client.zcard(prefix + "udone") == 1
    assert client.exists(prefix + "ud:1:w:k0") == 0
    assert storage.complete("plain", "t1", now=300.0)  # writes no marker, prunes none
    assert client.zcard(prefix + "udone") == 1
    assert storage.complete("other", "t1", now=300.0)
    assert client.zrange(prefix + "udone", 0, -1) == [(prefix + "ud:1:w:k-other").encode()]
    assert client.exists(prefix + "ud:1:w:k2") == 0
    assert not [k for k in client.scan_iter(match=prefix + "u:*")]


def test_complete_without_now_keeps_no_marker(storage: Storage) -> None:
    storage.enqueue([job("a", unique=Unique("k", period=50.0))])
    assert claim(storage) == ["a"]
    assert storage.complete("a", "t1")
    assert storage.enqueue([job("b", unique=Unique("k", period=50.0))]) == ["b"]


def test_delete_and_expire_release_the_key(storage: Storage) -> None:
    storage.enqueue([job("a", unique=Unique("k")), job("b", unique=Unique("j"), expires_at=5.0)])
    assert storage.delete("a") == "deleted"
    assert storage.enqueue([job("a2", unique=Unique("k"))]) == ["a2"]
    assert storage.expire(10.0) == ["b"]
    dead_counts = Unique("j", frozenset({"dead"}))
    assert storage.enqueue([job("b2", unique=Unique("j")), job("b3", unique=dead_counts)]) == [
        "b2", "b2",
    ]  # fmt: skip


def test_a_duplicate_batch_still_refuses_a_duplicate_id(storage: Storage) -> None:
    storage.enqueue([job("a", unique=Unique("k"))])
    with pytest.raises(ValueError, match="duplicate job id"):
        storage.enqueue([job("b", unique=Unique("k")), job("c"), job("c")])
    assert [j.id for j in storage.list_jobs()] == ["a"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("priority", "high"), ("priority", "2147483648"), ("expires_at", "nan"), ("timeout", "x")],
)
def test_a_damaged_v2_field_dies_alone(storage: Storage, field: str, value: str) -> None:
    assert isinstance(storage, RedisStorage)
    storage.enqueue([job(f"j{n}", expires_at=1e9) for n in range(4)])
    storage._client.hset(storage._prefix + "job:j1", field, value)
    assert claim(storage) == ["j0", "j2", "j3"]
    dead = storage.get("j1")
    assert dead is not None and dead.state == DEAD and field in dead.errors[-1]


@pytest.mark.parametrize("value", ["{not json", '{"a": 1}', '["a"]', "\xff"])
def test_damaged_meta_is_shown_and_dies_alone(storage: Storage, value: str) -> None:
    assert isinstance(storage, RedisStorage)
    storage.enqueue([job("a", meta={"k": "v"}), job("b", meta={"k": "v"}), job("c")])
    storage._client.hset(storage._prefix + "job:b", "meta", value)
    shown = storage.get("b")
    assert shown is not None and "meta" in shown.errors[-1] and dict(shown.meta) == {}
    assert [j.id for j in storage.list_jobs(tag=("k", "v"))] == ["a"]
    assert claim(storage) == ["a", "c"]
    dead = storage.get("b")
    assert dead is not None and dead.state == DEAD and "damaged stored job" in dead.errors[-1]


def test_a_newer_layout_refuses_to_open(backend: BackendHandle) -> None:
    storage = backend.open()
    assert isinstance(storage, RedisStorage)
    storage._client.set(storage._prefix + "schema", b"3")
    from exqueue.errors import SchemaVersionError

    with pytest.raises(SchemaVersionError, match="newer than this exqueue's 2.*Upgrade exqueue"):
        backend.open()
    storage._client.set(storage._prefix + "schema", b"two")
    with pytest.raises(SchemaVersionError, match="unknown key layout"):
        backend.open()
    storage._client.set(storage._prefix + "schema", b"2")


def test_unique_enqueue_is_refused_whole_on_bad_input() -> None:
    storage = RedisStorage(services.require("redis"), namespace=f"t{uuid.uuid4().hex[:8]}")
    try:
        with pytest.raises(redis.ResponseError, match="expires_at must be"):
            storage._run("ENQUEUE", 1, "a", "w", "p", "0.0", "0.0", 3,
                         '["0", "", "", "x", "1", "k", "", ""]')  # fmt: skip
        assert storage.list_jobs() == [] and storage.enqueue([job("a", unique=Unique("k"))])
    finally:
        storage.destroy()
        storage.close()


def test_a_node_stored_before_types_were_published_reads_with_none(storage: Storage) -> None:
    assert isinstance(storage, RedisStorage)
    old = {"host": "h", "pid": 7, "started_at": 1.0, "seen_at": 2.0, "workers": {"w": 2}}
    body = json.dumps({**old, "running": 1})  # the stored value before types were published
    storage._client.hset(storage._prefix_key("nodes"), "old", body)
    assert storage.nodes() == [NodeInfo("old", "h", 7, 1.0, 2.0, {"w": 2}, 1, {})]
    settings = TypeSettings(1, serial=True, rate=5, per=1.0, max_attempts=2)
    storage.beat_node(NodeInfo("new", "h", 8, 1.0, 3.0, {"w": 1}, 0, {"w": settings}))
    assert [dict(n.types) for n in storage.nodes()] == [{"w": settings}, {}]  # new, old
    assert [dict(n.schedules) for n in storage.nodes()] == [{}, {}]


def test_a_node_stored_before_schedules_were_published_reads_with_none(storage: Storage) -> None:
    assert isinstance(storage, RedisStorage)
    settings = TypeSettings(2, max_attempts=3)
    old = {"host": "h", "pid": 7, "started_at": 1.0, "seen_at": 2.0, "workers": {"w": 2}}
    body = json.dumps({**old, "running": 0, "types": {"w": settings.as_json()}})
    storage._client.hset(storage._prefix_key("nodes"), "old", body)
    cron = ScheduleSettings("w", "*/5 * * * *", None, "Europe/Paris", "skip")
    storage.beat_node(NodeInfo("new", "h", 8, 1.0, 3.0, {"w": 1}, 0, {}, {"s": cron}))
    assert storage.nodes() == [
        NodeInfo("new", "h", 8, 1.0, 3.0, {"w": 1}, 0, {}, {"s": cron}),
        NodeInfo("old", "h", 7, 1.0, 2.0, {"w": 2}, 0, {"w": settings}, {}),
    ]


def test_a_claimed_record_is_the_stored_record(storage: Storage) -> None:
    # The claim sends back only the fields it read, by position, and fills in
    # the lease it wrote: every field must read as a later get() reads it,
    # optional ones and kept errors (first and last, of more than are kept) too.
    storage.enqueue([
        job("plain"),
        job("full", run_at=1.5, enqueued_at=1.25, priority=7, meta={"k": "v", "é": "ü"},
            timeout=2.5, expires_at=1e9, unique=Unique("key-1", period=60.0)),
        job("failing", worker="f", max_attempts=30),
    ])  # fmt: skip
    for attempt in range(12):
        (failing,) = storage.claim(
            "f", 1, now=100.0 + attempt, owner="n", token=f"t{attempt}", lease_until=200.0
        )
        assert failing.id == "failing" and failing.attempt == attempt + 1
        assert failing.errors == storage.get("failing").errors  # type: ignore[union-attr]
        assert storage.schedule_retry("failing", f"t{attempt}", run_at=0.0, error=f"e{attempt}")
    records = [
        record
        for worker in ("w", "f")
        for record in storage.claim(
            worker, 10, now=150.5, owner="node-x", token="tok", lease_until=180.25
        )
    ]
    assert sorted(record.id for record in records) == ["failing", "full", "plain"]
    for record in records:
        stored = storage.get(record.id)
        assert stored is not None
        assert record == stored
        assert record.started_at == stored.started_at == 150.5
        assert (record.state, record.lease_owner, record.lease_token) == (RUNNING, "node-x", "tok")
        assert record.lease_expires == 180.25
    by_id = {record.id: record for record in records}
    assert by_id["full"].meta == {"k": "v", "é": "ü"} and by_id["full"].priority == 7
    assert by_id["full"].timeout == 2.5 and by_id["full"].unique_key == "key-1"
    assert by_id["failing"].error_count == 12 and by_id["failing"].errors[0] == "e0"
    assert by_id["failing"].errors[-1] == "e11" and by_id["failing"].attempt == 13
