"""RedisStorage.finish_and_claim (the FINISH script): one call, on a server and a cluster.

The conformance suite checks the rule (successes first, then the claim); these
check what is Redis's own: the script survives a flushed script cache, the claim
part buries a damaged job alone as CLAIM does, and the two parts' arguments are
cut apart whatever the number of successes.
"""

from __future__ import annotations

from typing import Any

from exqueue.storage import DEAD, RUNNING, FinishAndClaim, Storage
from tests.backends.redis.helpers import claim, job


def _raw(storage: Any) -> Any:
    return storage._client


def _request(done: list[tuple[str, str]], limit: int, **kw: Any) -> FinishAndClaim:
    return FinishAndClaim(done, "w", limit, 100.0, "node", "t2", 130.0, **kw)


def test_finish_and_claim_after_the_script_cache_was_flushed(storage: Storage) -> None:
    storage.enqueue([job(f"j{n}") for n in range(3)])
    assert claim(storage, limit=1) == ["j0"]
    _raw(storage).script_flush()
    out = storage.finish_and_claim(_request([("j0", "t1")], 1))  # type: ignore[attr-defined]
    assert out.completed == ["j0"]
    assert [r.id for r in out.claimed] == ["j1"]
    got = storage.get("j1")
    assert got is not None and got.state == RUNNING and got.lease_token == "t2"


def test_the_claim_part_buries_a_damaged_job_alone(storage: Storage) -> None:
    storage.enqueue([job(f"j{n}") for n in range(4)])
    assert claim(storage, limit=1) == ["j0"]
    prefix = storage._prefix  # type: ignore[attr-defined]
    _raw(storage).hset(f"{prefix}job:j1", "attempt", "x")
    out = storage.finish_and_claim(_request([("j0", "t1")], 2))  # type: ignore[attr-defined]
    assert out.completed == ["j0"]
    assert [r.id for r in out.claimed] == ["j2", "j3"]
    dead = storage.get("j1")
    assert dead is not None and dead.state == DEAD


def test_many_successes_and_none_are_cut_apart_from_the_claim(storage: Storage) -> None:
    storage.enqueue([job(f"j{n}") for n in range(8)])
    assert claim(storage, limit=5) == [f"j{n}" for n in range(5)]
    done = [(f"j{n}", "t1") for n in range(5)] + [("j9", "t1")]
    out = storage.finish_and_claim(_request(done, 10))  # type: ignore[attr-defined]
    assert out.completed == [f"j{n}" for n in range(5)]
    assert [r.id for r in out.claimed] == ["j5", "j6", "j7"]
    out = storage.finish_and_claim(_request([], 5))  # type: ignore[attr-defined]
    assert out.completed == [] and out.claimed == []
    assert storage.counts(100.0)["w"].running == 3


def test_the_workers_set_keeps_exactly_the_types_with_jobs(storage: Storage) -> None:
    # FINISH counts a type's jobs after its claim, and not for the type it claimed.
    storage.enqueue([job("a0", worker="a"), job("w0"), job("w1")])
    assert claim(storage, worker="a") == ["a0"] and claim(storage, limit=1) == ["w0"]
    workers = f"{storage._prefix}workers"  # type: ignore[attr-defined]
    out = storage.finish_and_claim(_request([("a0", "t1"), ("w0", "t1")], 1))  # type: ignore[attr-defined]
    assert out.completed == ["a0", "w0"] and [r.id for r in out.claimed] == ["w1"]
    assert _raw(storage).smembers(workers) == {b"w"}
    out = storage.finish_and_claim(_request([("w1", "t2")], 1))  # type: ignore[attr-defined]
    assert out.completed == ["w1"] and out.claimed == []
    assert _raw(storage).smembers(workers) == set()
    assert storage.counts(100.0) == {}


def test_a_paused_type_is_not_claimed_but_its_successes_are_written(storage: Storage) -> None:
    storage.enqueue([job("j0"), job("j1")])
    assert claim(storage, limit=1) == ["j0"]
    storage.pause("w", True)  # type: ignore[attr-defined]
    out = storage.finish_and_claim(_request([("j0", "t1")], 1))  # type: ignore[attr-defined]
    assert out.completed == ["j0"] and out.claimed == []
    assert storage.get("j0") is None
    storage.pause("w", False)  # type: ignore[attr-defined]
    out = storage.finish_and_claim(_request([], 1))  # type: ignore[attr-defined]
    assert out.completed == [] and [r.id for r in out.claimed] == ["j1"]
