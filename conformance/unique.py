"""Area: unique jobs. A key held by a job of the same worker type makes a duplicate.

Rules (capability UNIQUE; "Uniqueness" in the ``exqueue.storage`` module
docstring, :meth:`Storage.enqueue`): a job enqueued with ``Unique(key, states,
period)`` is a duplicate when a stored job of the same worker has that exact
``unique_key`` in ``states | {waiting}``, or, with a period, when a job of the
same worker with that key completed at ``T`` (``complete(now=T)``) with ``T +
P > enqueued_at`` (``P``: the period the completed job was enqueued with). A
duplicate stores nothing and ``enqueue`` returns the holder's id in its place.
Within a batch a later job duplicates an earlier one; the rest are stored; a
duplicate *id* still raises ``ValueError`` and stores nothing. Keys of different
worker types never collide. The check and the insert are atomic: the races live
in :mod:`conformance.unique_races`.
"""

from __future__ import annotations

from hypothesis import settings as Settings

from conformance.base import (
    NOW,
    Check,
    RuleBroken,
    StorageFactory,
    claim,
    expect,
    got,
    ids,
    job,
    opened,
    unique,
)
from conformance.unique_races import race_unique_processes, race_unique_threads
from exqueue.storage import (
    COMPLETE_MANY,
    DEAD,
    MULTI_PROCESS,
    RUNNING,
    UNIQUE,
    UNIQUE_KEY_LIMIT,
    Storage,
    Unique,
)

AREA = "unique jobs"

DUP_RULE = (
    "a job whose key is held (same worker, a state in states | {waiting}) stores nothing "
    "and enqueue returns the holder's id"
)
FREE_RULE = "a job whose key is not held is stored and enqueue returns its own id"


def _enqueue_one(storage: Storage, new_id: str, worker: str, key: Unique, **kw: object) -> str:
    result = storage.enqueue([job(new_id, worker, unique=key, **kw)])  # type: ignore[arg-type]
    expect(
        isinstance(result, list) and len(result) == 1,
        "enqueue returns one id per job (UNIQUE is declared)",
        repr(result),
    )
    return result[0]


def _expect_stored(storage: Storage, new_id: str, worker: str, key: Unique, **kw: object) -> None:
    answer = _enqueue_one(storage, new_id, worker, key, **kw)
    expect(answer == new_id, FREE_RULE, f"{new_id} (key {key}) -> {answer!r}")
    expect(storage.get(new_id) is not None, FREE_RULE, f"{new_id} is not stored")


def _expect_dup(
    storage: Storage, new_id: str, worker: str, key: Unique, holder: str | set[str], **kw: object
) -> None:
    """``new_id`` is a duplicate; ``holder``: the holder's id, or any of several holders."""
    before = len(storage.list_jobs(limit=10_000))
    answer = _enqueue_one(storage, new_id, worker, key, **kw)
    holders = {holder} if isinstance(holder, str) else holder
    expect(answer in holders, DUP_RULE, f"{new_id} (key {key}) -> {answer!r}, holder {holder!r}")
    expect(storage.get(new_id) is None, DUP_RULE, f"the duplicate {new_id} was stored")
    after = len(storage.list_jobs(limit=10_000))
    expect(after == before, DUP_RULE, f"{after - before} job(s) stored by a duplicate")


def check_unique_states(factory: StorageFactory, settings: Settings) -> None:
    """UNIQUE: a key is held by waiting jobs always, running and dead only when named."""
    with opened(factory) as (_, storage):
        worker = unique("uq-states")
        key = unique("key")
        default, only_waiting = Unique(key), Unique(key, frozenset())
        with_dead = Unique(key, frozenset({RUNNING, DEAD}))
        _expect_stored(storage, "u-1", worker, default)
        # waiting always holds it, even when the states do not name it
        _expect_dup(storage, "u-2", worker, only_waiting, "u-1")
        _expect_dup(storage, "u-3", worker, Unique(key, frozenset({DEAD})), "u-1")
        expect(got(storage, "u-1").unique_key == key, "a stored job keeps its unique_key")
        token = unique("tok")
        expect(ids(claim(storage, worker, 1, token=token)) == ["u-1"], "claim takes the job")
        _expect_dup(storage, "u-4", worker, default, "u-1")  # running, named by default
        _expect_stored(storage, "u-5", worker, only_waiting)  # running, not named
        token5 = unique("tok")
        expect(ids(claim(storage, worker, 1, token=token5)) == ["u-5"], "claim takes the job")
        storage.bury("u-1", token, error="dead")
        storage.bury("u-5", token5, error="dead")
        # dead holds it only when named
        _expect_stored(storage, "u-6", worker, default)
        token6 = unique("tok")
        expect(ids(claim(storage, worker, 1, token=token6)) == ["u-6"], "claim takes the job")
        expect(storage.complete("u-6", token6, now=NOW), "complete the holder")
        _expect_dup(storage, "u-7", worker, with_dead, {"u-1", "u-5"})  # either dead holder
        # A completed job without a period, and a deleted one, hold nothing.
        _expect_stored(storage, "u-8", worker, default)
        expect(storage.delete("u-8") == "deleted", "delete a waiting job")
        for dead_id in ("u-1", "u-5"):
            expect(storage.delete(dead_id) == "deleted", "delete a dead job")
        _expect_stored(storage, "u-9", worker, with_dead)


def check_unique_per_worker(factory: StorageFactory, settings: Settings) -> None:
    """UNIQUE: keys never collide across worker types, and match exactly (255 UTF-8 bytes)."""
    with opened(factory) as (_, storage):
        worker, other = unique("uq-a"), unique("uq-b")
        # 255 UTF-8 bytes, mostly two-byte letters, and a key differing only at its end.
        head = unique("k") + "-"
        room = UNIQUE_KEY_LIMIT - len(head.encode())
        long_key = head + "ж" * (room // 2) + "x" * (room % 2)
        assert len(long_key.encode()) == UNIQUE_KEY_LIMIT
        near = long_key[:-1] + ("y" if long_key[-1] != "y" else "z")
        base = unique("key")
        keys = [long_key, near, base, base.upper(), base + "%", base[:-1] + "_"]
        for n, key in enumerate(keys):
            _expect_stored(storage, f"a-{n}", worker, Unique(key))
            _expect_stored(storage, f"b-{n}", other, Unique(key))
        for n, key in enumerate(keys):
            _expect_dup(storage, f"a-dup-{n}", worker, Unique(key), f"a-{n}")
            _expect_dup(storage, f"b-dup-{n}", other, Unique(key), f"b-{n}")
        stored = got(storage, "a-0").unique_key
        expect(stored == long_key, "a unique key is stored exactly", f"{stored!r}")


def check_unique_period(factory: StorageFactory, settings: Settings) -> None:
    """UNIQUE: with a period, a job completed at T holds its key until T + period (exclusive)."""
    with opened(factory) as (_, storage):
        worker = unique("uq-period")
        key = unique("key")
        hour = Unique(key, period=3600.0)
        _expect_stored(storage, "p-1", worker, hour)
        token = unique("tok")
        expect(ids(claim(storage, worker, 1, token=token)) == ["p-1"], "claim takes the job")
        done = NOW + 7200.0  # long after it was enqueued: the period runs from completion
        expect(storage.complete("p-1", token, now=done), "complete with now")
        expect(storage.get("p-1") is None, "a completed job is removed")
        rule = DUP_RULE + "; a job completed at T holds its key while T + period > enqueued_at"
        at = done + 3599.5
        answer = _enqueue_one(storage, "p-2", worker, hour, enqueued_at=at, run_at=at)
        expect(answer == "p-1", rule, f"enqueued {at - done} s after completion -> {answer!r}")
        expect(storage.get("p-2") is None, rule, "the duplicate was stored")
        # Without a period the new job does not look at completed jobs.
        _expect_stored(storage, "p-3", worker, Unique(key), enqueued_at=at, run_at=at)
        expect(storage.delete("p-3") == "deleted", "delete a waiting job")
        # At exactly T + period the key is free.
        at = done + 3600.0
        answer = _enqueue_one(storage, "p-4", worker, hour, enqueued_at=at, run_at=at)
        expect(answer == "p-4", FREE_RULE + " (at T + period exactly)", f"-> {answer!r}")
        # A failure holds nothing once dead; complete without now keeps no period.
        token = unique("tok")
        expect(ids(claim(storage, worker, 1, now=at, token=token)) == ["p-4"], "claim")
        expect(storage.complete("p-4", token), "complete without now")
        _expect_stored(storage, "p-5", worker, hour, enqueued_at=at, run_at=at)
        if COMPLETE_MANY in storage.capabilities:
            token = unique("tok")
            expect(ids(claim(storage, worker, 1, now=at, token=token)) == ["p-5"], "claim")
            done_ids = storage.complete_many([("p-5", token)], now=at)  # type: ignore[attr-defined]
            expect(list(done_ids) == ["p-5"], "complete_many removes a held job", done_ids)
            _expect_dup(
                storage, "p-6", worker, hour, "p-5", enqueued_at=at + 10.0, run_at=at + 10.0
            )


def check_unique_batch(factory: StorageFactory, settings: Settings) -> None:
    """UNIQUE: in a batch a later job duplicates an earlier one; the rest is stored."""
    with opened(factory) as (_, storage):
        worker, other = unique("uq-batch"), unique("uq-batch-b")
        k1, k2, held = unique("k1"), unique("k2"), unique("held")
        _expect_stored(storage, "held-1", worker, Unique(held))
        batch = [
            job("b-1", worker, unique=Unique(k1)),
            job("b-2", worker, unique=Unique(k1, frozenset())),
            job("b-3", worker),
            job("b-4", other, unique=Unique(k1)),
            job("b-5", worker, unique=Unique(held)),
            job("b-6", worker, unique=Unique(k2)),
            job("b-7", other, unique=Unique(k1)),
        ]
        answer = storage.enqueue(batch)
        expected = ["b-1", "b-1", "b-3", "b-4", "held-1", "b-6", "b-4"]
        rule = "within a batch a later job duplicates an earlier one; the rest is stored"
        expect(answer == expected, rule, f"returned {answer}")
        stored = ids(storage.list_jobs(limit=100))
        expect(stored == ["held-1", "b-1", "b-3", "b-4", "b-6"], rule, f"stored {stored}")
        # A duplicate id raises and stores none of the batch, duplicates or not.
        before = ids(storage.list_jobs(limit=100))
        bad = [
            job("c-1", worker, unique=Unique(unique("k"))),
            job("c-2", worker, unique=Unique(k2)),
            job("b-3", worker),
        ]
        try:
            storage.enqueue(bad)
        except ValueError:
            pass
        else:
            raise RuleBroken("rule broken: a duplicate id raises ValueError -- it did not")
        after = ids(storage.list_jobs(limit=100))
        expect(after == before, "a batch with a duplicate id stores nothing", after)


def check_unique_race_threads(factory: StorageFactory, settings: Settings) -> None:
    """UNIQUE: 8 threads enqueueing one key at once leave exactly one job, named by all."""
    with opened(factory) as (_, storage):
        try:
            race_unique_threads(storage, threads=8, rounds=12)
        except AssertionError as exc:
            raise RuleBroken(f"rule broken: {RACE_RULE} (threads) -- {exc}") from exc


def check_unique_race_processes(factory: StorageFactory, settings: Settings) -> None:
    """UNIQUE + MULTI_PROCESS: 4 processes enqueueing one key at once leave exactly one job."""
    with opened(factory):
        pass  # empties the store before the children start
    try:
        race_unique_processes(factory, processes=4, rounds=6)
    except AssertionError as exc:
        raise RuleBroken(f"rule broken: {RACE_RULE} (processes) -- {exc}") from exc


RACE_RULE = (
    "the unique check and the insert are one atomic step: racing enqueuers of one key "
    "leave exactly one job, and every one of them gets its id"
)

CHECKS = [
    Check("unique_states", UNIQUE, check_unique_states, AREA),
    Check("unique_per_worker", UNIQUE, check_unique_per_worker, AREA),
    Check("unique_period", UNIQUE, check_unique_period, AREA),
    Check("unique_batch", UNIQUE, check_unique_batch, AREA),
]

RACE_CHECKS = [
    Check("unique_race_threads", UNIQUE, check_unique_race_threads, "races"),
    Check("unique_race_processes", (UNIQUE, MULTI_PROCESS), check_unique_race_processes, "races"),
]
