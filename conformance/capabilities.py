"""Area: the protocol object and its optional capabilities.

Rules (``exqueue.storage``: :class:`Storage`, :class:`SupportsWakeup`,
:class:`SupportsTransactionalEnqueue`, :class:`SupportsCompleteMany`): the
object implements the protocol and declares its capabilities as a frozenset of
names; ``close()`` is idempotent. ``wait_for_jobs`` wakes for every transition
that makes a job runnable (enqueue, retry, release, requeue, recover), also
when made between two waits, and honours its timeout. ``enqueue_in`` commits
and rolls back with the caller's transaction, never on its own.
``complete_many`` removes exactly the pairs still held, however many.

The suite opens a transaction for ``enqueue_in`` through the storage's
``conformance_transaction()`` method when it has one (a context manager that
yields the transaction object and commits on a normal exit, rolls back on an
exception); else, for a storage with a SQLAlchemy ``engine`` attribute,
``engine.begin()``. A backend with neither gets the existence check only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from hypothesis import settings as Settings

from conformance.base import (
    NOW,
    Check,
    StorageFactory,
    claim,
    expect,
    ids,
    implements,
    job,
    opened,
    unique,
)
from exqueue.storage import (
    COMPLETE_MANY,
    EXPIRY,
    FINISH_AND_CLAIM,
    RUNNING,
    SERVER_CLOCK,
    TRANSACTIONAL_ENQUEUE,
    WAITING,
    WAKEUP,
    FinishAndClaim,
    Storage,
    SupportsCompleteMany,
    SupportsFinishAndClaim,
    SupportsServerClock,
    SupportsTransactionalEnqueue,
    SupportsWakeup,
)

AREA = "capabilities"

_PROTOCOL_METHODS = frozenset(
    name for name in vars(Storage) if not name.startswith("_") and callable(vars(Storage)[name])
)


def check_protocol(factory: StorageFactory, settings: Settings) -> None:
    """The object is a Storage; capabilities is a frozenset of names; close() is idempotent."""
    with opened(factory) as (_, storage):
        caps = storage.capabilities
        # expire() is part of capability EXPIRY: a version-1 backend has none.
        optional = set() if EXPIRY in caps else {"expire"}
        missing = [
            name
            for name in sorted(_PROTOCOL_METHODS - optional)
            if not callable(getattr(storage, name, None))
        ]
        expect(not missing, "the object has every method of exqueue.Storage", missing)
        expect(
            isinstance(caps, frozenset) and all(isinstance(c, str) for c in caps),
            "capabilities is a frozenset of str",
            repr(caps),
        )
        expect(storage.list_jobs() == [] and storage.counts(NOW) == {}, "a fresh store is empty")
        storage.enqueue([])
        expect(storage.list_jobs() == [], "an empty batch stores nothing")
        expect(claim(storage, "nobody", 5) == [], "a claim of an unknown worker takes nothing")
    # the session closed it once; a second close must be harmless
    storage.close()


def check_wakeup(factory: StorageFactory, settings: Settings) -> None:
    """WAKEUP: wait_for_jobs returns True soon after an enqueue, and honours its timeout."""
    with opened(factory) as (_, storage):
        waiter = implements(storage, SupportsWakeup, "WAKEUP is declared: wait_for_jobs exists")
        started = time.monotonic()
        woke = waiter.wait_for_jobs(0.2)
        expect(isinstance(woke, bool), "wait_for_jobs returns a bool", repr(woke))
        expect(time.monotonic() - started < 2.0, "wait_for_jobs(0.2) returns by its timeout")
        stop = threading.Event()
        worker = unique("wakeup")

        def enqueue_until_stopped() -> None:
            # Keep enqueueing: a signal sent before the waiter listens is not a bug.
            n = 0
            while not stop.wait(0.1):
                n += 1
                storage.enqueue([job(f"{worker}-{n}", worker)])

        producer = threading.Thread(target=enqueue_until_stopped, daemon=True)
        started = time.monotonic()
        producer.start()
        try:
            woke = waiter.wait_for_jobs(10.0)
        finally:
            stop.set()
            producer.join(10)
        rule = "wait_for_jobs wakes for an enqueue made while it waits"
        expect(woke is True, rule, "it returned False")
        expect(time.monotonic() - started < 9.0, rule, "it woke only at its timeout")


def check_wakeup_between_waits(factory: StorageFactory, settings: Settings) -> None:
    """WAKEUP: enqueue, retry, release, requeue and recover each wake the next wait of a thread."""
    with opened(factory) as (_, storage):
        waiter = implements(storage, SupportsWakeup, "WAKEUP is declared: wait_for_jobs exists")
        worker = unique("between")
        far = NOW + 1e9
        held: dict[str, tuple[str, str]] = {}

        def hold(name: str, lease_until: float = far + 60) -> None:
            token = unique("tok")
            taken = claim(storage, worker, 1, now=far, token=token, lease_until=lease_until)
            expect(len(taken) == 1, "claim takes a runnable job", ids(taken))
            held[name] = (taken[0].id, token)

        def dead() -> None:
            hold("requeue")
            storage.bury(*held["requeue"], error="x")

        steps: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
            ("enqueue", lambda: None, lambda: storage.enqueue([job(unique(worker), worker)])),
            (
                "schedule_retry",
                lambda: hold("retry"),
                lambda: storage.schedule_retry(*held["retry"], run_at=NOW, error="e"),
            ),
            ("release", lambda: hold("release"), lambda: storage.release(*held["release"])),
            (
                "requeue",
                dead,
                lambda: storage.requeue(held["requeue"][0], unique(worker), now=NOW),
            ),
            ("recover", lambda: hold("recover", NOW), lambda: storage.recover(far, error="lost")),
        ]
        for name, prepare, transition in steps:
            prepare()
            waiter.wait_for_jobs(0.05)  # the thread's previous wait: it returns
            transition()
            started = time.monotonic()
            woke = waiter.wait_for_jobs(3.0)
            rule = (
                f"a {name} makes a job runnable, so it wakes wait_for_jobs, also when made "
                "between two waits of a thread (it counts for the next)"
            )
            expect(woke is True, rule, "the next wait returned False")
            expect(time.monotonic() - started < 2.5, rule, "the next wait blocked")


def check_complete_many(factory: StorageFactory, settings: Settings) -> None:
    """COMPLETE_MANY: removes exactly the pairs still held (500 at once), and nothing else."""
    with opened(factory) as (_, storage):
        many = implements(storage, SupportsCompleteMany, "COMPLETE_MANY: complete_many exists")
        worker = unique("many")
        storage.enqueue([job(f"m-{n}", worker) for n in range(5)])
        held = claim(storage, worker, 4, token="t")
        expect(ids(held) == ["m-0", "m-1", "m-2", "m-3"], "claim takes four jobs", ids(held))
        items = [("m-0", "t"), ("m-1", "stale"), ("m-2", "t"), ("m-4", "t"), ("nope", "t")]
        rule = "complete_many removes exactly the jobs still running with the token given"
        done = sorted(many.complete_many(items))
        expect(done == ["m-0", "m-2"], rule, done)
        left = {r.id: r.state for r in storage.list_jobs(worker=worker)}
        expect(left == {"m-1": RUNNING, "m-3": RUNNING, "m-4": WAITING}, rule, left)
        expect(many.complete_many([]) == [], "complete_many of nothing removes nothing")
        many.complete_many([("m-1", "t"), ("m-3", "t")])
        storage.delete("m-4")
        big = unique("many-big")
        storage.enqueue([job(f"{big}-{n}", big) for n in range(520)])
        taken = claim(storage, big, 520, token="b")
        expect(len(taken) == 520, "claim takes 520 runnable jobs", len(taken))
        pairs = [(r.id, "b") for r in taken[:500]]
        done = many.complete_many(pairs)
        expect(sorted(done) == sorted(i for i, _ in pairs), rule, f"removed {len(done)} of 500")
        left_ids = ids(storage.list_jobs(worker=big, limit=1000))
        expect(left_ids == ids(taken[500:]), rule, f"{len(left_ids)} left, expected 20")


def check_finish_and_claim(factory: StorageFactory, settings: Settings) -> None:
    """FINISH_AND_CLAIM: the successes are recorded first (fenced), then the claim is made."""
    with opened(factory) as (_, storage):
        rule = "FINISH_AND_CLAIM is declared: finish_and_claim exists"
        both = implements(storage, SupportsFinishAndClaim, rule)

        def request(done: list[tuple[str, str]], worker: str, limit: int, **kw: Any) -> Any:
            return FinishAndClaim(done, worker, limit, NOW, "node-a", "t2", NOW + 60.0, **kw)

        serial = unique("fc-serial")
        storage.enqueue([job(f"{serial}-{n}", serial) for n in range(3)])
        head = claim(storage, serial, 1, token="t", serial=True)
        expect(ids(head) == [f"{serial}-0"], "a serial claim takes the head", ids(head))
        out = both.finish_and_claim(request([(f"{serial}-0", "t")], serial, 1, serial=True))
        rule = (
            "finish_and_claim records the successes before it claims: a serial type's "
            "next head is handed out in the same call"
        )
        expect(out.completed == [f"{serial}-0"], rule, f"completed {out.completed}")
        expect(ids(out.claimed) == [f"{serial}-1"], rule, f"claimed {ids(out.claimed)}")
        record = out.claimed[0]
        rule = "finish_and_claim returns its claimed jobs as claim does (running, its lease)"
        seen = (record.state, record.lease_token, record.attempt)
        expect(seen == (RUNNING, "t2", 1), rule, seen)

        plain = unique("fc")
        storage.enqueue([job(f"{plain}-{n}", plain) for n in range(5)])
        held = claim(storage, plain, 2, token="t")
        expect(ids(held) == [f"{plain}-0", f"{plain}-1"], "claim takes two jobs", ids(held))
        done = [(f"{plain}-1", "t"), (f"{plain}-0", "stale"), (f"missing-{plain}", "t")]
        out = both.finish_and_claim(request(done, plain, 10))
        rule = "finish_and_claim completes exactly the pairs still held, in the order given"
        expect(out.completed == [f"{plain}-1"], rule, f"completed {out.completed}")
        rule = (
            "finish_and_claim claims as claim does after the successes: a job still "
            "running (a stale token's) is not taken again, a completed one is gone"
        )
        taken = ids(out.claimed)
        expect(taken == [f"{plain}-{n}" for n in (2, 3, 4)], rule, f"claimed {taken}")
        left = {r.id: (r.state, r.lease_token) for r in storage.list_jobs(worker=plain)}
        expect(left.get(f"{plain}-0") == (RUNNING, "t"), rule, left)
        expect(f"{plain}-1" not in left, rule, left)
        out = both.finish_and_claim(request([], plain, 0))
        rule = "finish_and_claim of no successes and limit 0 does nothing"
        expect(out.completed == [] and out.claimed == [], rule, out)


def _transaction_opener(storage: object) -> Callable[[], AbstractContextManager[Any]] | None:
    hook = getattr(storage, "conformance_transaction", None)
    if callable(hook):
        return hook  # type: ignore[no-any-return]
    begin = getattr(getattr(storage, "engine", None), "begin", None)
    return begin if callable(begin) else None


class _Rollback(Exception):
    pass


def check_transactional_enqueue(factory: StorageFactory, settings: Settings) -> None:
    """TRANSACTIONAL_ENQUEUE: enqueue_in commits and rolls back with the caller's transaction."""
    with opened(factory) as (_, storage):
        rule = "TRANSACTIONAL_ENQUEUE is declared: enqueue_in exists"
        tx_store = implements(storage, SupportsTransactionalEnqueue, rule)
        opener = _transaction_opener(storage)
        if opener is None:
            return  # the transaction type is the backend's own: existence only
        worker = unique("tx")
        with opener() as tx:
            tx_store.enqueue_in(tx, [job("tx-kept", worker), job("tx-kept-2", worker)])
        rule = "enqueue_in persists its jobs when the caller's transaction commits"
        expect(ids(storage.list_jobs(worker=worker)) == ["tx-kept", "tx-kept-2"], rule)
        try:
            with opener() as tx:
                tx_store.enqueue_in(tx, [job("tx-dropped", worker)])
                raise _Rollback
        except _Rollback:
            pass
        rule = "enqueue_in never commits on its own: a rolled-back transaction leaves no job"
        found = ids(storage.list_jobs(worker=worker))
        expect(found == ["tx-kept", "tx-kept-2"], rule, f"listed {found}")


def check_server_clock(factory: StorageFactory, settings: Settings) -> None:
    """SERVER_CLOCK: server_time() is epoch seconds, within a second of this machine's clock."""
    rule = "server_time() returns the store's clock as epoch seconds (a float)"
    with opened(factory) as (_, storage):
        clock = implements(storage, SupportsServerClock, rule)
        before = time.time()
        server = clock.server_time()
        after = time.time()
        expect(isinstance(server, float), rule, f"got {server!r}")
        # Loopback servers share this machine's clock; the slack covers a loaded machine.
        expect(
            before - 1.0 <= server <= after + 1.0,
            rule,
            f"{server - after:+.3f}s from time.time() on the same machine",
        )


CHECKS = [
    Check("protocol", None, check_protocol, AREA),
    Check("wakeup", WAKEUP, check_wakeup, AREA),
    Check("wakeup_between_waits", WAKEUP, check_wakeup_between_waits, AREA),
    Check("transactional_enqueue", TRANSACTIONAL_ENQUEUE, check_transactional_enqueue, AREA),
    Check("complete_many", COMPLETE_MANY, check_complete_many, AREA),
    Check("finish_and_claim", FINISH_AND_CLAIM, check_finish_and_claim, AREA),
    Check("server_clock", SERVER_CLOCK, check_server_clock, AREA),
]
