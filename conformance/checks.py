"""Every check of the suite as a plain function ``check(factory, settings)``.

:data:`CHECKS` maps a check's name to the function and the capability it needs
(None: every backend). :class:`conformance.StorageConformance` turns each into a
pytest test; :func:`run_suite` runs them all without pytest (the suite's own
tests use it to prove it catches broken backends).

Each check empties the store first (with the backend's own ``recover`` and
``delete``) and closes what it opened.
"""

from __future__ import annotations

import os
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from hypothesis import example, given
from hypothesis import settings as Settings
from hypothesis import strategies as st

from conformance.concurrency import race_processes, race_threads
from conformance.machine import StorageSession, run_state_machine
from conformance.records import check_types
from exqueue.storage import (
    COMPLETE_MANY,
    DEAD,
    MULTI_PROCESS,
    PERSISTENT,
    RUNNING,
    SERVER_CLOCK,
    TRANSACTIONAL_ENQUEUE,
    WAITING,
    WAKEUP,
    WORKER_LOST,
    Counts,
    NewJob,
    Storage,
    SupportsCompleteMany,
    SupportsServerClock,
    SupportsTransactionalEnqueue,
    SupportsWakeup,
)

StorageFactory = Callable[[], Storage]
NOW = 1_700_000_000.0


@dataclass(frozen=True)
class Check:
    """One check: what it is called, what it needs declared, what it runs."""

    name: str
    requires: str | None
    run: Callable[[StorageFactory, Settings], None]


@contextmanager
def _opened(factory: StorageFactory) -> Iterator[tuple[StorageSession, Storage]]:
    session = StorageSession(factory)
    try:
        yield session, session.fresh()
    finally:
        session.close()


def _job(job_id: str, worker: str, payload: bytes = b"", run_at: float = NOW) -> NewJob:
    return NewJob(
        id=job_id,
        worker=worker,
        payload=payload,
        run_at=run_at,
        enqueued_at=NOW,
        max_attempts=3,
    )


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# -- protocol and capabilities --------------------------------------------------------


def check_protocol(factory: StorageFactory, settings: Settings) -> None:
    """The object is a Storage; capabilities is a frozenset of names; close() is idempotent."""
    with _opened(factory) as (_, storage):
        assert isinstance(storage, Storage), "the object lacks methods of exqueue.Storage"
        caps = storage.capabilities
        assert isinstance(caps, frozenset) and all(isinstance(c, str) for c in caps), (
            f"capabilities must be a frozenset of str, got {caps!r}"
        )
        assert storage.list_jobs() == [] and storage.counts(NOW) == {}, "a fresh store is empty"
        storage.enqueue([])
        assert storage.list_jobs() == [], "an empty batch stores nothing"
        assert storage.claim("nobody", 5, now=NOW, owner="o", token="t", lease_until=NOW) == []
    # the session closed it once; a second close must be harmless
    storage.close()


def check_wakeup(factory: StorageFactory, settings: Settings) -> None:
    """WAKEUP: wait_for_jobs returns True soon after an enqueue, and honours its timeout."""
    with _opened(factory) as (_, storage):
        assert isinstance(storage, SupportsWakeup), (
            "WAKEUP is declared but wait_for_jobs is missing"
        )
        started = time.monotonic()
        woke = storage.wait_for_jobs(0.2)
        assert isinstance(woke, bool)
        assert time.monotonic() - started < 2.0, "wait_for_jobs(0.2) blocked far past its timeout"
        stop = threading.Event()
        worker = _unique("wakeup")

        def enqueue_until_stopped() -> None:
            # Keep enqueueing: a signal sent before the waiter listens is not a bug.
            n = 0
            while not stop.wait(0.1):
                n += 1
                storage.enqueue([_job(f"{worker}-{n}", worker)])

        producer = threading.Thread(target=enqueue_until_stopped, daemon=True)
        started = time.monotonic()
        producer.start()
        try:
            woke = storage.wait_for_jobs(10.0)
        finally:
            stop.set()
            producer.join(10)
        assert woke is True, "wait_for_jobs did not report the enqueues made while it waited"
        assert time.monotonic() - started < 9.0, "wait_for_jobs woke only at its timeout"


def check_wakeup_between_waits(factory: StorageFactory, settings: Settings) -> None:
    """WAKEUP: a transition made between two waits of a thread counts for its next wait.

    Each runnable-making transition (enqueue, schedule_retry, release, requeue,
    recover) is made on the storage while the waiting thread is not
    waiting; its next wait must return True well before its timeout.
    """
    with _opened(factory) as (_, waiter):
        assert isinstance(waiter, SupportsWakeup), "WAKEUP is declared but wait_for_jobs is missing"
        # The same object: a second factory() call is a separate store for MemoryStorage.
        other = waiter
        worker = _unique("between")
        far = NOW + 1e9

        def claim_one() -> tuple[str, str]:
            token = _unique("tok")
            got = other.claim(worker, 1, now=far, owner="o", token=token, lease_until=far)
            assert len(got) == 1
            return got[0].id, token

        def lease_expired() -> None:
            token = _unique("tok")
            got = other.claim(worker, 1, now=far, owner="o", token=token, lease_until=NOW)
            assert len(got) == 1

        def setup_dead() -> str:
            job_id, token = claim_one()
            assert other.bury(job_id, token, error="x")
            return job_id

        steps: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
            ("enqueue", lambda: None, lambda: other.enqueue([_job(_unique(worker), worker)])),
        ]
        leases: dict[str, tuple[str, str]] = {}
        dead: dict[str, str] = {}
        steps += [
            (
                "schedule_retry",
                lambda: leases.update(retry=claim_one()),
                lambda: other.schedule_retry(*leases["retry"], run_at=NOW, error="e"),
            ),
            (
                "release",
                lambda: leases.update(release=claim_one()),
                lambda: other.release(*leases["release"]),
            ),
            (
                "requeue",
                lambda: dead.update(job=setup_dead()),
                lambda: other.requeue(dead["job"], _unique(worker), now=NOW),
            ),
            ("recover", lease_expired, lambda: other.recover(far, error="lost")),
        ]
        for name, prepare, transition in steps:
            prepare()
            waiter.wait_for_jobs(0.05)  # the thread's previous wait: it returns
            transition()
            started = time.monotonic()
            woke = waiter.wait_for_jobs(5.0)
            assert woke is True, f"a {name} made between two waits was lost by the next wait"
            assert time.monotonic() - started < 4.0, f"after a {name}, the next wait blocked"


def check_complete_many(factory: StorageFactory, settings: Settings) -> None:
    """COMPLETE_MANY: removes exactly the pairs still held, and leaves the rest alone."""
    with _opened(factory) as (_, storage):
        assert isinstance(storage, SupportsCompleteMany), (
            "COMPLETE_MANY is declared but complete_many is missing"
        )
        worker = _unique("many")
        storage.enqueue([_job(f"m-{n}", worker) for n in range(5)])
        held = storage.claim(worker, 4, now=NOW, owner="o", token="t", lease_until=NOW + 9)
        assert [r.id for r in held] == ["m-0", "m-1", "m-2", "m-3"]
        items = [("m-0", "t"), ("m-1", "stale"), ("m-2", "t"), ("m-4", "t"), ("nope", "t")]
        assert sorted(storage.complete_many(items)) == ["m-0", "m-2"]
        left = {r.id: r.state for r in storage.list_jobs(worker=worker)}
        assert left == {"m-1": RUNNING, "m-3": RUNNING, "m-4": WAITING}, left
        assert storage.complete_many([]) == []


def check_transactional_enqueue(factory: StorageFactory, settings: Settings) -> None:
    """TRANSACTIONAL_ENQUEUE: enqueue_in exists (its transaction type is the backend's own)."""
    with _opened(factory) as (_, storage):
        assert isinstance(storage, SupportsTransactionalEnqueue), (
            "TRANSACTIONAL_ENQUEUE is declared but enqueue_in is missing"
        )


# -- the model -----------------------------------------------------------------------


def check_state_machine(factory: StorageFactory, settings: Settings) -> None:
    """Random operation sequences agree with the reference model at every step."""
    run_state_machine(factory, settings)


# -- payloads, names, order ------------------------------------------------------------


def check_payload_roundtrip(factory: StorageFactory, settings: Settings) -> None:
    """Any bytes come back unchanged from get, list_jobs and claim."""
    with _opened(factory) as (_, storage):
        worker = _unique("payload")

        @settings
        @given(payload=st.binary(max_size=4096))
        @example(payload=b"")
        @example(payload=b"\x00")
        @example(payload=b"\x00\xff\xfe" * 100)
        @example(payload="é✓ 名前".encode() + b"\x80\xc3")
        def roundtrip(payload: bytes) -> None:
            job_id = _unique("p")
            storage.enqueue([_job(job_id, worker, payload)])
            stored = storage.get(job_id)
            assert stored is not None
            check_types(stored)
            assert stored.payload == payload, "get() changed the payload"
            listed = storage.list_jobs(worker=worker)
            assert [r.payload for r in listed] == [payload], "list_jobs() changed the payload"
            claimed = storage.claim(
                worker, 1, now=NOW, owner="o", token=job_id, lease_until=NOW + 9
            )
            assert [r.payload for r in claimed] == [payload], "claim() changed the payload"
            assert storage.complete(job_id, job_id)

        roundtrip()


def check_large_payload(factory: StorageFactory, settings: Settings) -> None:
    """A 1 MiB payload round-trips (and survives a reopen on a persistent backend)."""
    payload = os.urandom(1 << 20)
    with _opened(factory) as (session, storage):
        worker = _unique("large")
        storage.enqueue([_job("large-1", worker, payload)])
        stored = storage.get("large-1")
        assert stored is not None and stored.payload == payload, "the 1 MiB payload changed"
        if PERSISTENT in storage.capabilities:
            storage = session.reopen()
            stored = storage.get("large-1")
            assert stored is not None and stored.payload == payload, "changed by a reopen"
        claimed = storage.claim(worker, 1, now=NOW, owner="o", token="t", lease_until=NOW + 9)
        assert len(claimed) == 1 and claimed[0].payload == payload


NEAR_TWINS = (
    "café",
    "cafe",
    "CAFE",
    "Café",
    unicodedata.normalize("NFD", "café"),
    "cafe ",
    " cafe",
    "ｃａｆｅ",
    "café✓",
    "カフェ",
    "🧾.receipts",
)


def check_unicode_worker_names(factory: StorageFactory, settings: Settings) -> None:
    """Worker names are exact strings: case, accents, normalization and spaces all count."""
    with _opened(factory) as (_, storage):
        storage.enqueue([_job(f"twin-{n}", name) for n, name in enumerate(NEAR_TWINS)])
        counts = storage.counts(NOW)
        assert counts == {name: Counts(waiting=1) for name in NEAR_TWINS}, (
            f"near-identical worker names were merged or altered: {counts}"
        )
        for n, name in enumerate(NEAR_TWINS):
            listed = [(r.id, r.worker) for r in storage.list_jobs(worker=name)]
            assert listed == [(f"twin-{n}", name)], f"list_jobs(worker={name!r}) gave {listed}"
            claimed = storage.claim(name, 5, now=NOW, owner="ø", token=f"t{n}", lease_until=NOW + 9)
            assert [r.id for r in claimed] == [f"twin-{n}"], (
                f"claim({name!r}) took {[r.id for r in claimed]}"
            )
            assert claimed[0].worker == name and claimed[0].lease_owner == "ø"
            assert storage.complete(f"twin-{n}", f"t{n}")

        names = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=40)

        @settings
        @given(name=names)
        def any_name(name: str) -> None:
            job_id = _unique("u")
            storage.enqueue([_job(job_id, name)])
            try:
                stored = storage.get(job_id)
                assert stored is not None and stored.worker == name
                assert storage.counts(NOW).get(name) == Counts(waiting=1)
                claimed = storage.claim(
                    name, 2, now=NOW, owner=name, token=job_id, lease_until=NOW + 9
                )
                assert [(r.id, r.worker, r.lease_owner) for r in claimed] == [(job_id, name, name)]
                assert storage.complete(job_id, job_id)
            finally:
                # Hypothesis replays a failing name (and may draw the twins' names,
                # which it mines from this module): leave no job behind.
                if storage.get(job_id) is not None and not storage.complete(job_id, job_id):
                    storage.delete(job_id)

        any_name()


def check_fifo_equal_run_at(factory: StorageFactory, settings: Settings) -> None:
    """Jobs with the same run_at are listed and claimed in enqueue order, serial ones too."""
    with _opened(factory) as (_, storage):
        worker = _unique("fifo")
        ids = [f"fifo-{n:03d}" for n in range(60)]
        # Single enqueues and batches interleaved; ids deliberately not in sort order
        # of anything but the enqueue itself.
        order = ids[::-1]
        storage.enqueue([_job(order[0], worker)])
        storage.enqueue([_job(i, worker) for i in order[1:20]])
        for job_id in order[20:30]:
            storage.enqueue([_job(job_id, worker)])
        storage.enqueue([_job(i, worker) for i in order[30:]])
        listed = storage.list_jobs(worker=worker, limit=100)
        assert [r.id for r in listed] == order, "list_jobs is not in enqueue (seq) order"
        seqs = [r.seq for r in listed]
        assert seqs == sorted(set(seqs)), f"seq is not strictly increasing: {seqs}"
        claimed: list[str] = []
        for _ in range(len(order)):  # bounded: a backend may hand out running jobs again
            batch = storage.claim(worker, 7, now=NOW, owner="o", token="t", lease_until=NOW + 9)
            if not batch:
                break
            claimed += [r.id for r in batch]
        assert claimed == order, "claims with equal run_at are not in enqueue order"

        serial = _unique("fifo-serial")
        storage.enqueue([_job(f"s-{n}", serial) for n in range(8)])
        for n in range(8):
            got = storage.claim(
                serial, 3, now=NOW, owner="o", token=f"s{n}", lease_until=NOW + 9, serial=True
            )
            assert [r.id for r in got] == [f"s-{n}"], f"serial claim {n} took {[r.id for r in got]}"
            again = storage.claim(
                serial, 3, now=NOW, owner="o", token="x", lease_until=NOW + 9, serial=True
            )
            assert again == [], "a serial type ran a second job while its head was running"
            assert storage.complete(f"s-{n}", f"s{n}")

        # A dead head blocks its type; retried by hand it keeps its place (and seq).
        storage.enqueue([_job(f"h-{n}", serial) for n in range(3)])
        head = storage.claim(
            serial, 1, now=NOW, owner="o", token="h", lease_until=NOW + 9, serial=True
        )
        assert [r.id for r in head] == ["h-0"]
        assert storage.bury("h-0", "h", error="boom")
        blocked = storage.claim(
            serial, 1, now=NOW, owner="o", token="b", lease_until=NOW + 9, serial=True
        )
        assert blocked == [], "a serial type ran past its dead head"
        assert storage.requeue("h-0", "h-0-again", now=NOW) == "requeued"
        requeued = storage.get("h-0-again")
        assert requeued is not None and requeued.seq == head[0].seq, (
            "a requeued job changed its seq"
        )
        first = storage.claim(
            serial, 1, now=NOW, owner="o", token="a", lease_until=NOW + 9, serial=True
        )
        assert [r.id for r in first] == ["h-0-again"], "a requeued head lost its place in line"


def check_reopen_keeps_everything(factory: StorageFactory, settings: Settings) -> None:
    """PERSISTENT: a new storage object over the same data sees every field and lease."""
    with _opened(factory) as (session, storage):
        worker = _unique("reopen")
        storage.enqueue([_job(f"r-{n}", worker, bytes([n]) * n, NOW + (n % 3)) for n in range(9)])
        now = NOW + 5
        running = storage.claim(
            worker, 4, now=now, owner="node-ø", token="held", lease_until=now + 60
        )
        assert len(running) == 4
        assert storage.schedule_retry(running[0].id, "held", run_at=now + 30, error="first ✗")
        assert storage.bury(running[1].id, "held", error="fatal ✗")
        assert storage.requeue(running[1].id, "r-requeued", now=now) == "requeued"
        assert storage.bury(running[3].id, "held", error="dead and staying dead ✗")
        second = storage.claim(
            worker, 1, now=now, owner="node-ø", token="lost", lease_until=now + 1
        )
        assert storage.recover(now + 1, error=WORKER_LOST).waiting == tuple(r.id for r in second)
        before = storage.list_jobs(limit=100)
        counts = storage.counts(now)
        storage = session.reopen()
        after = storage.list_jobs(limit=100)
        assert after == before, "records changed across close and reopen"
        assert storage.counts(now) == counts
        assert {r.state for r in after} >= {WAITING, RUNNING}
        # Leases survive: the holder may still finish, the lost holder may not.
        assert storage.complete(running[2].id, "held"), "a held lease was forgotten by reopen"
        assert not storage.complete(second[0].id, "lost"), "a lost lease came back after reopen"
        storage.enqueue([_job("r-after", worker)])
        newest = storage.get("r-after")
        assert newest is not None and newest.seq > max(r.seq for r in after), (
            "a job enqueued after reopen must get a larger seq than every earlier job"
        )
        assert [r.id for r in storage.list_jobs(state=DEAD, worker=worker)] == [running[3].id]


def check_thread_race(factory: StorageFactory, settings: Settings) -> None:
    """Threads racing to claim from one storage object: no double claim, no loss."""
    with _opened(factory) as (_, storage):
        race_threads(storage)


def check_server_clock(factory: StorageFactory, settings: Settings) -> None:
    """SERVER_CLOCK: server_time() is epoch seconds, within a second of this machine's."""
    with _opened(factory) as (_, storage):
        assert isinstance(storage, SupportsServerClock), (
            "SERVER_CLOCK is declared but server_time is missing"
        )
        before = time.time()
        server = storage.server_time()
        after = time.time()
        assert isinstance(server, float), f"server_time() must be a float, not {server!r}"
        # Loopback servers share this machine's clock; the slack covers a loaded machine.
        assert before - 1.0 <= server <= after + 1.0, (
            f"server_time() is {server - after:+.3f}s from time.time() on the same machine"
        )


def check_process_race(factory: StorageFactory, settings: Settings) -> None:
    """MULTI_PROCESS: spawned processes racing to claim: no double claim, no loss."""
    with _opened(factory):
        pass  # empties the store before the children start
    race_processes(factory)


CHECKS: dict[str, Check] = {
    check.name: check
    for check in (
        Check("protocol", None, check_protocol),
        Check("state_machine", None, check_state_machine),
        Check("payload_roundtrip", None, check_payload_roundtrip),
        Check("large_payload", None, check_large_payload),
        Check("unicode_worker_names", None, check_unicode_worker_names),
        Check("fifo_equal_run_at", None, check_fifo_equal_run_at),
        Check("reopen_keeps_everything", PERSISTENT, check_reopen_keeps_everything),
        Check("thread_race", None, check_thread_race),
        Check("process_race", MULTI_PROCESS, check_process_race),
        Check("wakeup", WAKEUP, check_wakeup),
        Check("wakeup_between_waits", WAKEUP, check_wakeup_between_waits),
        Check("transactional_enqueue", TRANSACTIONAL_ENQUEUE, check_transactional_enqueue),
        Check("complete_many", COMPLETE_MANY, check_complete_many),
        Check("server_clock", SERVER_CLOCK, check_server_clock),
    )
}


def capabilities_of(factory: StorageFactory) -> frozenset[str]:
    """What the backend declares (opens one storage to ask)."""
    storage = factory()
    try:
        return frozenset(storage.capabilities)
    finally:
        storage.close()


def run_suite(
    factory: StorageFactory, settings: Settings, only: list[str] | None = None
) -> dict[str, BaseException]:
    """Run every applicable check; the failures by check name (empty: the backend conforms)."""
    declared = capabilities_of(factory)
    failures: dict[str, BaseException] = {}
    for check in CHECKS.values():
        if only is not None and check.name not in only:
            continue
        if check.requires is not None and check.requires not in declared:
            continue
        try:
            check.run(factory, settings)
        except Exception as exc:
            failures[check.name] = exc
    return failures


__all__ = ["CHECKS", "Check", "StorageFactory", "capabilities_of", "run_suite"]
