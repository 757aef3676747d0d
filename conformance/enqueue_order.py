"""Area: enqueue and ordering. Batches are all-or-nothing; seq orders everything; times are exact.

Rules (``exqueue.storage`` module docstring and :meth:`Storage.enqueue`):
each job gets a ``seq`` strictly increasing in enqueue order (in list order
within a batch, never reused, not even after the highest job is removed);
claims take ``(run_at, seq)`` order whatever ``enqueued_at`` or the ids say;
a batch with a duplicate id anywhere raises ``ValueError`` and stores nothing;
payloads and times come back bit for bit.
"""

from __future__ import annotations

import os

from hypothesis import example, given
from hypothesis import settings as Settings
from hypothesis import strategies as st

from conformance.base import (
    NOW,
    Check,
    StorageFactory,
    claim,
    expect,
    got,
    ids,
    job,
    limited,
    opened,
    unique,
)
from exqueue.storage import PERSISTENT

AREA = "enqueue and ordering"


def check_fifo_equal_run_at(factory: StorageFactory, settings: Settings) -> None:
    """Jobs with the same run_at are listed and claimed in enqueue order, serial ones too."""
    with opened(factory) as (_, storage):
        worker = unique("fifo")
        order = [f"fifo-{n:03d}" for n in range(60)][::-1]
        # Single enqueues and batches interleaved; ids sort against enqueue order.
        storage.enqueue([job(order[0], worker)])
        storage.enqueue([job(i, worker) for i in order[1:20]])
        for job_id in order[20:30]:
            storage.enqueue([job(job_id, worker)])
        storage.enqueue([job(i, worker) for i in order[30:]])
        rule = "list_jobs and claim follow enqueue (seq) order when run_at is equal"
        listed = storage.list_jobs(worker=worker, limit=100)
        expect(ids(listed) == order, rule, f"listed {ids(listed)[:8]}...")
        seqs = [r.seq for r in listed]
        expect(seqs == sorted(set(seqs)), "seq is strictly increasing in enqueue order", seqs)
        taken: list[str] = []
        for _ in range(len(order)):  # bounded: a backend may hand out running jobs again
            batch = claim(storage, worker, 7)
            if not batch:
                break
            taken += ids(batch)
        expect(taken == order, rule, f"claimed {taken[:8]}...")

        serial = unique("fifo-serial")
        storage.enqueue([job(f"s-{n}", serial) for n in range(8)])
        for n in range(8):
            head = claim(storage, serial, 3, token=f"s{n}", serial=True)
            expect(
                ids(head) == [f"s-{n}"],
                "a serial claim takes only the head (lowest seq in any state)",
                f"claim {n} took {ids(head)}",
            )
            expect(
                claim(storage, serial, 3, serial=True) == [],
                "a serial type runs nothing while its head is running",
            )
            expect(storage.complete(f"s-{n}", f"s{n}"), "the holder completes its job")

        # A dead head blocks its type; retried by hand it keeps its place (and seq).
        storage.enqueue([job(f"h-{n}", serial) for n in range(3)])
        head = claim(storage, serial, 1, token="h", serial=True)
        expect(ids(head) == ["h-0"], "a serial claim takes the head", ids(head))
        storage.bury("h-0", "h", error="boom")
        expect(
            claim(storage, serial, 1, serial=True) == [],
            "a dead head blocks its serial type until retried or deleted",
        )
        expect(storage.requeue("h-0", "h-0-again", now=NOW) == "requeued", "requeue of a dead job")
        expect(
            got(storage, "h-0-again").seq == head[0].seq,
            "a requeued job keeps its seq (its place in line)",
        )
        first = claim(storage, serial, 1, serial=True)
        expect(ids(first) == ["h-0-again"], "a requeued head keeps its place in line", ids(first))


def check_ties_ignore_enqueued_at(factory: StorageFactory, settings: Settings) -> None:
    """Equal run_at ties are broken by seq, not by enqueued_at (clocks of nodes differ)."""
    with opened(factory) as (_, storage):
        worker = unique("ties")
        # Producers on different nodes: enqueued_at goes backwards while seq goes up.
        jobs = [job(f"tie-{n}", worker, enqueued_at=NOW - n * 0.25) for n in range(12)]
        for new in jobs[:4]:
            storage.enqueue([new])
        storage.enqueue(jobs[4:])
        want = [j.id for j in jobs]
        rule = "claims take (run_at, seq) order; enqueued_at plays no part"
        taken = ids(claim(storage, worker, 5)) + ids(claim(storage, worker, 20))
        expect(taken == want, rule, f"claimed {taken}")
        listed = ids(storage.list_jobs(worker=worker))
        expect(listed == want, "list_jobs is in seq order", f"listed {listed}")


def check_seq_never_reused(factory: StorageFactory, settings: Settings) -> None:
    """seq is never reused: a job enqueued later has a larger seq than every job before it."""
    with opened(factory) as (_, storage):
        worker = unique("seq")
        highest = 0
        rule = "a new job's seq is larger than that of every job enqueued before, even removed ones"
        storage.enqueue([job("seq-a", worker), job("seq-b", worker)])
        highest = got(storage, "seq-b").seq
        expect(storage.delete("seq-b") == "deleted", "delete removes a waiting job")
        storage.enqueue([job("seq-c", worker)])
        seen = got(storage, "seq-c").seq
        expect(seen > highest, rule, f"seq {seen} after a removed job with seq {highest}")
        token = claim(storage, worker, 5, token="t")
        expect(len(token) == 2, "claim takes both runnable jobs", ids(token))
        expect(storage.complete("seq-c", "t"), "the holder completes its job")
        storage.enqueue([job("seq-d", worker)])
        later = got(storage, "seq-d").seq
        expect(later > seen, rule, f"seq {later} after a completed job with seq {seen}")


def check_batch_order(factory: StorageFactory, settings: Settings) -> None:
    """A batch of 150 gets seq in list order, whatever order the ids sort in."""
    with opened(factory) as (_, storage):
        worker = unique("batch")
        order = [unique("b") for _ in range(150)]
        storage.enqueue([job(job_id, worker) for job_id in order])
        listed = storage.list_jobs(worker=worker, limit=1000)
        wrong = [n for n, (a, b) in enumerate(zip(ids(listed), order, strict=False)) if a != b]
        expect(ids(listed) == order, "within a batch, seq follows list order", f"at {wrong[:5]}")


def check_batch_late_duplicate(factory: StorageFactory, settings: Settings) -> None:
    """A batch over 100 jobs with a duplicate late in it raises ValueError and stores none."""
    with opened(factory) as (_, storage):
        worker = unique("dup")
        storage.enqueue([job("dup-stored", worker)])
        rule = "a batch with a duplicate id raises ValueError and persists none of the batch"
        shapes = {
            "a repeat inside the batch at 140 of 150": 140,
            "an id already stored at the end of 150": -1,
            "a repeat inside the batch at 230 of 260": 230,
        }
        for what, at in shapes.items():
            size = 260 if at == 230 else 150
            batch = [job(unique("d"), worker) for _ in range(size)]
            batch[at] = job(batch[3].id if at != -1 else "dup-stored", worker)
            try:
                storage.enqueue(batch)
            except ValueError:
                pass
            else:
                expect(False, rule, f"{what}: no ValueError")
            left = ids(storage.list_jobs(worker=worker, limit=1000))
            expect(left == ["dup-stored"], rule, f"{what}: {len(left) - 1} jobs were stored")


def check_time_precision(factory: StorageFactory, settings: Settings) -> None:
    """run_at and enqueued_at come back exactly (full float precision), and order claims."""
    with opened(factory) as (_, storage):
        worker = unique("time")
        rule = "run_at and enqueued_at are stored exactly as given (a Python float)"

        @limited(settings, 20)
        @given(fraction=st.floats(0, 1, exclude_max=True), whole=st.integers(-(10**6), 10**6))
        @example(fraction=0.123456789, whole=0)
        @example(fraction=0.000001, whole=0)
        @example(fraction=0.999999999, whole=86_400)
        @example(fraction=0.5, whole=-1)
        def exact(fraction: float, whole: int) -> None:
            at = 1_700_000_000.0 + whole + fraction
            queued = at - 0.000123
            job_id = unique("t")
            storage.enqueue([job(job_id, worker, run_at=at, enqueued_at=queued)])
            try:
                record = got(storage, job_id)
                expect(
                    (record.run_at, record.enqueued_at) == (at, queued),
                    rule,
                    f"stored {at!r}/{queued!r}, read {record.run_at!r}/{record.enqueued_at!r}",
                )
            finally:
                storage.delete(job_id)

        exact()
        # Two jobs a microsecond apart run in run_at order, not enqueue order.
        later = job("later", worker, run_at=NOW + 1e-6)
        sooner = job("sooner", worker, run_at=NOW)
        storage.enqueue([later, sooner])
        order = ids(claim(storage, worker, 5, now=NOW + 1))
        expect(order == ["sooner", "later"], "claims take run_at order to the microsecond", order)
        early = claim(storage, worker, 5, now=NOW)
        expect(early == [], "a job is not runnable a microsecond before its run_at")


def check_payload_roundtrip(factory: StorageFactory, settings: Settings) -> None:
    """Any bytes come back unchanged from get, list_jobs and claim."""
    with opened(factory) as (_, storage):
        worker = unique("payload")

        @limited(settings, 30)
        @given(payload=st.binary(max_size=4096))
        @example(payload=b"")
        @example(payload=b"\x00")
        @example(payload=b"\x00\xff\xfe" * 100)
        @example(payload="é✓ 名前".encode() + b"\x80\xc3")
        def roundtrip(payload: bytes) -> None:
            job_id = unique("p")
            storage.enqueue([job(job_id, worker, payload)])
            rule = "the payload comes back byte for byte"
            expect(got(storage, job_id).payload == payload, rule, "get() changed it")
            listed = [r.payload for r in storage.list_jobs(worker=worker)]
            expect(listed == [payload], rule, "list_jobs() changed it")
            taken = claim(storage, worker, 1, token=job_id)
            expect([r.payload for r in taken] == [payload], rule, "claim() changed it")
            expect(storage.complete(job_id, job_id), "the holder completes its job")

        roundtrip()


def check_large_payload(factory: StorageFactory, settings: Settings) -> None:
    """A 1 MiB payload round-trips (and survives a reopen on a persistent backend)."""
    payload = os.urandom(1 << 20)
    rule = "a 1 MiB payload comes back byte for byte"
    with opened(factory) as (session, storage):
        worker = unique("large")
        storage.enqueue([job("large-1", worker, payload)])
        expect(got(storage, "large-1").payload == payload, rule, "get() changed it")
        if PERSISTENT in storage.capabilities:
            storage = session.reopen()
            expect(got(storage, "large-1").payload == payload, rule, "a reopen changed it")
        taken = claim(storage, worker, 1)
        expect([r.payload for r in taken] == [payload], rule, "claim() changed it")


CHECKS = [
    Check("fifo_equal_run_at", None, check_fifo_equal_run_at, AREA),
    Check("ties_ignore_enqueued_at", None, check_ties_ignore_enqueued_at, AREA),
    Check("seq_never_reused", None, check_seq_never_reused, AREA),
    Check("batch_order", None, check_batch_order, AREA),
    Check("batch_late_duplicate", None, check_batch_late_duplicate, AREA),
    Check("time_precision", None, check_time_precision, AREA),
    Check("payload_roundtrip", None, check_payload_roundtrip, AREA),
    Check("large_payload", None, check_large_payload, AREA),
]
