"""MemoryStorage's protocol-2 indexes: claim order across its scheduled and ready
heaps (including a claim whose ``now`` is earlier than one before it), expiry set
aside and found again, unique keys and completion markers. The conformance suite
checks the rules; these check the index bookkeeping behind them."""

from __future__ import annotations

from exqueue.storage import DEAD, EXPIRED, WAITING, NewJob, Unique
from exqueue_memory import MemoryStorage


def job(job_id: str, **fields: object) -> NewJob:
    base: dict[str, object] = {"run_at": 0.0, "enqueued_at": 0.0, "max_attempts": 3}
    base.update(fields)
    return NewJob(job_id, "w", b"p", **base)  # type: ignore[arg-type]


def claim(storage: MemoryStorage, now: float, limit: int = 10) -> list[str]:
    taken = storage.claim("w", limit, now=now, owner="o", token="t", lease_until=now + 60)
    return [record.id for record in taken]


def test_priority_then_run_at_then_seq() -> None:
    storage = MemoryStorage()
    storage.enqueue(
        [
            job("late-high", run_at=5.0, priority=-1),
            job("a", run_at=1.0, priority=2),
            job("b", run_at=1.0, priority=2),
            job("c", run_at=0.5, priority=2),
            job("low", run_at=0.0, priority=2**31 - 1),
        ]
    )
    assert claim(storage, now=2.0) == ["c", "a", "b", "low"]
    assert claim(storage, now=5.0) == ["late-high"]


def test_a_claim_with_an_earlier_now_takes_no_job_promoted_by_a_later_one() -> None:
    storage = MemoryStorage()
    storage.enqueue([job("soon", run_at=10.0), job("now", run_at=1.0)])
    assert claim(storage, now=10.0, limit=1) == ["now"]  # promotes "soon"
    assert claim(storage, now=5.0) == []
    assert claim(storage, now=10.0) == ["soon"]


def test_expired_jobs_are_set_aside_then_found_by_an_earlier_claim() -> None:
    storage = MemoryStorage()
    storage.enqueue([job("x", expires_at=5.0)])
    assert claim(storage, now=5.0) == []
    assert claim(storage, now=4.0) == ["x"]


def test_expire_oldest_seq_first_with_a_limit() -> None:
    storage = MemoryStorage()
    storage.enqueue([job("b", expires_at=3.0), job("a", expires_at=1.0), job("c")])
    assert storage.expire(3.0, limit=1) == ["b"]
    assert storage.expire(3.0) == ["a"]
    record = storage.get("a")
    assert record is not None
    assert (record.state, record.errors, record.attempt) == (DEAD, (EXPIRED,), 0)
    assert storage.get("c") is not None and storage.get("c").state == WAITING  # type: ignore[union-attr]


def test_unique_markers_hold_the_key_for_the_completed_jobs_period() -> None:
    storage = MemoryStorage()
    once = Unique("k", period=10.0)
    assert storage.enqueue([job("1", unique=once), job("2", unique=once)]) == ["1", "1"]
    assert claim(storage, now=0.0) == ["1"]
    assert storage.enqueue([job("3", unique=once)]) == ["1"]  # running holds it
    assert storage.complete("1", "t", now=100.0)
    assert storage.enqueue([job("4", enqueued_at=109.0, unique=once)]) == ["1"]
    assert storage.enqueue([job("5", enqueued_at=109.0, unique=Unique("k"))]) == ["5"]
    assert storage.enqueue([job("6", enqueued_at=110.0, unique=once)]) == ["5"]
    assert storage.complete("5", "t", now=111.0) is False  # not running
    claim(storage, now=111.0)
    assert storage.complete("5", "t", now=111.0)
    assert storage.enqueue([job("7", enqueued_at=111.0, unique=once)]) == ["7"]
