"""SQLStorage behaves exactly like MemoryStorage, on SQLite, PostgreSQL and MariaDB.

The named tests pin each rule down; ``test_random_walk_matches_memory`` drives
both backends through the same seeded random sequence of calls (reopening the
SQL store now and then) and compares every result.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from exqueue.storage import (
    DEAD,
    RUNNING,
    WAITING,
    Counts,
    JobRecord,
    NewJob,
    Recovered,
    Storage,
)
from exqueue_memory import MemoryStorage
from tests.support.backends import BackendHandle

SQL = ["sqlite", "postgres", "mysql"]
pytestmark = pytest.mark.parametrize("backend", SQL, indirect=True)


def job(
    job_id: str, worker: str = "w", run_at: float = 0.0, payload: bytes = b"p", tries: int = 3
) -> NewJob:
    return NewJob(job_id, worker, payload, run_at=run_at, enqueued_at=0.0, max_attempts=tries)


def claim(
    storage: Storage,
    worker: str = "w",
    limit: int = 10,
    now: float = 10.0,
    token: str = "t",
    **kw: Any,
) -> list[str]:
    got = storage.claim(
        worker, limit, now=now, owner="node", token=token, lease_until=now + 30, **kw
    )
    return [record.id for record in got]


def test_enqueue_then_claim_takes_run_at_then_seq_order(storage: Storage) -> None:
    storage.enqueue(
        [job("late", run_at=5.0), job("a", run_at=1.0), job("b", run_at=1.0), job("c", run_at=1.0)]
    )
    storage.enqueue([job("future", run_at=100.0)])
    records = storage.claim("w", 10, now=10.0, owner="n1", token="tok", lease_until=40.0)
    assert [r.id for r in records] == ["a", "b", "c", "late"]
    first = records[0]
    assert (
        first.state,
        first.attempt,
        first.lease_owner,
        first.lease_token,
        first.lease_expires,
    ) == (
        RUNNING,
        1,
        "n1",
        "tok",
        40.0,
    )
    assert [r.seq for r in records[:3]] == sorted(r.seq for r in records[:3])
    assert claim(storage, token="t2") == []  # "future" is not runnable yet
    assert claim(storage, now=100.0, token="t3") == ["future"]


def test_claim_respects_limit_and_worker(storage: Storage) -> None:
    storage.enqueue([job(f"j{i}") for i in range(5)] + [job("other", worker="x")])
    assert claim(storage, limit=2) == ["j0", "j1"]
    assert claim(storage, limit=0) == []
    assert claim(storage, limit=10, token="t2") == ["j2", "j3", "j4"]
    assert claim(storage, worker="x", token="t3") == ["other"]


def test_complete_needs_the_current_token(storage: Storage) -> None:
    storage.enqueue([job("a")])
    claim(storage, token="good")
    assert storage.complete("a", "stale") is False
    assert storage.get("a") is not None
    assert storage.complete("a", "good") is True
    assert storage.get("a") is None
    assert storage.complete("a", "good") is False


def test_retry_appends_error_and_reschedules(storage: Storage) -> None:
    storage.enqueue([job("a")])
    claim(storage, token="t1")
    assert storage.schedule_retry("a", "wrong", run_at=50.0, error="nope") is False
    assert storage.schedule_retry("a", "t1", run_at=50.0, error="first") is True
    record = storage.get("a")
    assert record is not None
    assert (record.state, record.run_at, record.errors, record.attempt) == (
        WAITING,
        50.0,
        ("first",),
        1,
    )
    assert (record.lease_owner, record.lease_token, record.lease_expires) == (None, None, None)
    assert claim(storage, now=49.0, token="t2") == []
    assert claim(storage, now=50.0, token="t2") == ["a"]
    assert storage.schedule_retry("a", "t2", run_at=60.0, error="second") is True
    after = storage.get("a")
    assert after is not None and after.errors == ("first", "second") and after.attempt == 2


def test_bury_makes_dead_and_requeue_keeps_seq(storage: Storage) -> None:
    storage.enqueue([job("a"), job("b")])
    claim(storage, limit=1, token="t1")
    assert storage.bury("a", "t1", error="fatal") is True
    assert storage.bury("a", "t1", error="again") is False
    dead = storage.get("a")
    assert dead is not None and dead.state == DEAD and dead.errors == ("fatal",)
    assert storage.requeue("b", "b2", now=1.0) == "not_dead"
    assert storage.requeue("nope", "x", now=1.0) == "missing"
    with pytest.raises(ValueError):
        storage.requeue("a", "b", now=1.0)  # the new id is taken
    assert storage.requeue("a", "a2", now=3.0) == "requeued"
    assert storage.get("a") is None
    again = storage.get("a2")
    assert again is not None
    assert (again.seq, again.state, again.attempt, again.errors, again.run_at) == (
        dead.seq,
        WAITING,
        0,
        (),
        3.0,
    )


def test_release_gives_the_attempt_back(storage: Storage) -> None:
    storage.enqueue([job("a", run_at=2.0)])
    claim(storage, token="t1")
    assert storage.release("a", "other") is False
    assert storage.release("a", "t1") is True
    record = storage.get("a")
    assert record is not None
    assert (record.state, record.attempt, record.run_at, record.lease_token) == (
        WAITING,
        0,
        2.0,
        None,
    )
    assert storage.release("a", "t1") is False


def test_extend_reports_only_held_jobs(storage: Storage) -> None:
    storage.enqueue([job("a"), job("b"), job("c")])
    claim(storage, limit=2, token="t1")
    assert storage.extend("t1", ["b", "c", "a", "zzz"], 99.0) == ["b", "a"]
    record = storage.get("a")
    assert record is not None and record.lease_expires == 99.0
    assert storage.extend("t1", [], 99.0) == []
    assert storage.extend("other", ["a"], 120.0) == []


def test_recover_expired_and_by_owner(storage: Storage) -> None:
    storage.enqueue([job("once", tries=1), job("twice", tries=2), job("mine"), job("theirs")])
    storage.claim("w", 2, now=10.0, owner="n1", token="t1", lease_until=20.0)
    storage.claim("w", 1, now=10.0, owner="me", token="t2", lease_until=100.0)
    storage.claim("w", 1, now=10.0, owner="other", token="t3", lease_until=100.0)
    assert storage.recover(15.0, error="lost") == Recovered()
    found = storage.recover(20.0, owner="me", error="lost")
    assert found == Recovered(waiting=("twice", "mine"), dead=("once",))
    twice = storage.get("twice")
    assert twice is not None
    assert (twice.state, twice.run_at, twice.errors, twice.lease_token) == (
        WAITING,
        20.0,
        ("lost",),
        None,
    )
    # The old holder's token no longer works.
    assert storage.complete("twice", "t1") is False
    assert storage.get("theirs") is not None and storage.get("theirs").state == RUNNING  # type: ignore[union-attr]


def test_serial_claims_only_the_head(storage: Storage) -> None:
    storage.enqueue([job("h1", run_at=5.0), job("h2", run_at=0.0), job("h3")])
    # The head is h1 (lowest seq); it is not due yet, so nothing runs.
    assert claim(storage, now=1.0, serial=True) == []
    assert claim(storage, now=5.0, serial=True, token="t1") == ["h1"]
    assert claim(storage, now=5.0, serial=True, token="t2") == []  # head is running
    storage.bury("h1", "t1", error="boom")
    assert claim(storage, now=5.0, serial=True, token="t3") == []  # a dead head blocks
    storage.requeue("h1", "h1b", now=6.0)
    assert claim(storage, now=6.0, serial=True, token="t4") == ["h1b"]  # kept its place
    storage.complete("h1b", "t4")
    assert claim(storage, now=6.0, serial=True, token="t5") == ["h2"]


def test_enqueue_batch_is_all_or_nothing(storage: Storage) -> None:
    storage.enqueue([job("x")])
    with pytest.raises(ValueError):
        storage.enqueue([job("a"), job("b"), job("a")])
    with pytest.raises(ValueError):
        storage.enqueue([job("c"), job("x")])
    assert [r.id for r in storage.list_jobs()] == ["x"]
    storage.enqueue([])
    assert [r.id for r in storage.list_jobs()] == ["x"]


def test_delete_waiting_dead_not_running(storage: Storage) -> None:
    storage.enqueue([job("a"), job("b"), job("c")])
    claim(storage, limit=2, token="t")
    storage.bury("b", "t", error="x")
    assert storage.delete("a") == "running"
    assert storage.delete("b") == "deleted"
    assert storage.delete("c") == "deleted"
    assert storage.delete("c") == "missing"
    assert [r.id for r in storage.list_jobs()] == ["a"]


def test_list_jobs_filters_and_pages(storage: Storage) -> None:
    storage.enqueue([job(f"j{i}", worker="a" if i % 2 else "b") for i in range(6)])
    claim(storage, worker="a", limit=1, token="t")
    everything = storage.list_jobs()
    assert [r.id for r in everything] == [f"j{i}" for i in range(6)]
    assert [r.id for r in storage.list_jobs(worker="a")] == ["j1", "j3", "j5"]
    assert [r.id for r in storage.list_jobs(state=RUNNING)] == ["j1"]
    assert [r.id for r in storage.list_jobs(state=WAITING, worker="a")] == ["j3", "j5"]
    assert [r.id for r in storage.list_jobs(limit=2, after_seq=everything[1].seq)] == ["j2", "j3"]
    assert storage.list_jobs(limit=0) == []


def test_counts(storage: Storage) -> None:
    storage.enqueue([job("now1"), job("now2"), job("later", run_at=50.0), job("x1", worker="x")])
    claim(storage, limit=1, token="t")
    claim(storage, worker="x", token="t2")
    storage.bury("x1", "t2", error="e")
    assert storage.counts(10.0) == {
        "w": Counts(waiting=1, scheduled=1, running=1, dead=0),
        "x": Counts(dead=1),
    }
    assert storage.counts(60.0)["w"] == Counts(waiting=2, running=1)


def test_one_mebibyte_payload_round_trips(storage: Storage) -> None:
    payload = random.Random(1).randbytes(1024 * 1024)
    storage.enqueue([job("big", payload=payload)])
    record = storage.get("big")
    assert record is not None and record.payload == payload
    assert (
        storage.claim("w", 1, now=1.0, owner="o", token="t", lease_until=2.0)[0].payload == payload
    )


def test_ids_and_names_compare_exactly(storage: Storage) -> None:
    storage.enqueue(
        [job("Job", worker="Mail"), job("job", worker="mail"), job("é", worker="mäil")]
        + [job("job ", worker="mail ")]
    )
    assert claim(storage, worker="mail") == ["job"]
    assert claim(storage, worker="mail ", token="t2") == ["job "]
    assert storage.get("JOB") is None
    record = storage.get("é")
    assert record is not None and record.worker == "mäil"


def test_reopen_keeps_every_state(backend: BackendHandle) -> None:
    first = backend.open()
    first.enqueue([job("wait"), job("later", run_at=500.0), job("run"), job("dead", tries=1)])
    first.claim("w", 1, now=0.0, owner="o", token="keep", lease_until=900.0)  # "wait"
    first.claim("w", 2, now=0.0, owner="o", token="t2", lease_until=900.0)  # "run", "dead"
    first.schedule_retry("run", "t2", run_at=0.0, error="e1")
    first.bury("dead", "t2", error="e2")
    first.claim("w", 1, now=0.0, owner="o", token="t3", lease_until=900.0)  # "run" again
    before = {r.id: r for r in first.list_jobs()}
    first.close()
    second = backend.reopen()
    after = {r.id: r for r in second.list_jobs()}
    assert after == before
    assert after["run"].attempt == 2 and after["run"].errors == ("e1",)
    assert after["later"].state == WAITING and after["dead"].state == DEAD
    assert second.complete("wait", "keep") is True  # the lease survives the reopen
    second.enqueue([job("new")])
    assert second.get("new").seq > max(r.seq for r in before.values())  # type: ignore[union-attr]


def test_random_walk_matches_memory(backend: BackendHandle) -> None:
    rng = random.Random(20240607)
    model = MemoryStorage()
    real = backend.open()
    now = 0.0
    tokens: list[str] = ["t0"]
    made = 0
    for step in range(400):
        op = rng.choice(
            [
                "enqueue",
                "enqueue",
                "claim",
                "claim",
                "serial",
                "complete",
                "retry",
                "bury",
                "release",
                "extend",
                "recover",
                "delete",
                "requeue",
                "tick",
                "reopen",
            ]
        )
        ids = [r.id for r in model.list_jobs(limit=1000)] or ["none"]
        token = rng.choice(tokens)
        if op == "enqueue":
            batch = []
            for _ in range(rng.randint(0, 4)):
                made += 1
                batch.append(
                    job(
                        f"j{made}",
                        worker=rng.choice("ab"),
                        run_at=now + rng.choice([0, 0, 1, 2.5]),
                        tries=rng.randint(1, 3),
                    )
                )
            if batch and rng.random() < 0.2:
                batch.append(job(rng.choice(ids + [batch[0].id])))
            call: Any = ("enqueue", (batch,), {})
        elif op in ("claim", "serial"):
            token = f"t{step}"
            tokens.append(token)
            call = (
                "claim",
                (rng.choice("ab"), rng.randint(0, 3)),
                {
                    "now": now,
                    "owner": rng.choice(["n1", "n2"]),
                    "token": token,
                    "lease_until": now + rng.choice([1, 5]),
                    "serial": op == "serial",
                },
            )
        elif op in ("complete", "release"):
            call = (op, (rng.choice(ids), token), {})
        elif op == "retry":
            retry_args = {"run_at": now + 1, "error": f"e{step}"}
            call = ("schedule_retry", (rng.choice(ids), token), retry_args)
        elif op == "bury":
            call = ("bury", (rng.choice(ids), token), {"error": f"e{step}"})
        elif op == "extend":
            call = ("extend", (token, rng.sample(ids, min(3, len(ids))), now + 3), {})
        elif op == "recover":
            call = ("recover", (now,), {"owner": rng.choice([None, "n1"]), "error": "lost"})
        elif op == "delete":
            call = ("delete", (rng.choice(ids),), {})
        elif op == "requeue":
            made += 1
            call = ("requeue", (rng.choice(ids), f"j{made}"), {"now": now})
        elif op == "tick":
            now += rng.choice([0.5, 1, 2])
            continue
        else:
            real.close()
            real = backend.reopen()
            continue
        name, args, kwargs = call
        expected, got = (
            _outcome(getattr(model, name), args, kwargs),
            _outcome(getattr(real, name), args, kwargs),
        )
        assert got == expected, f"step {step}: {name}{args}{kwargs}"
        assert _unseq(real.list_jobs(limit=1000)) == _unseq(model.list_jobs(limit=1000)), step
        assert real.counts(now) == model.counts(now)


def _outcome(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return ("ok", _unseq(method(*args, **kwargs)))
    except ValueError:
        return ("ValueError", None)


def _unseq(value: Any) -> Any:
    """Drop seq values: a failed batch may use up sequence numbers on a server, which
    is allowed (seq only has to increase); order is still compared, through lists."""
    if isinstance(value, list):
        return [_unseq(v) for v in value]
    if isinstance(value, JobRecord):
        return replace(value, seq=0)
    return value
