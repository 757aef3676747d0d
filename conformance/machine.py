"""The stateful check: a Hypothesis state machine drives a backend and the model side by side.

Each rule applies one storage operation to both the real backend and
:class:`~conformance.model.Model`, with a fake clock (plain floats on a 0.5 s grid,
so equal ``run_at`` values are common), and compares what the call returned.
After every step :meth:`StorageMachine.observe` compares everything a caller can
see: ``list_jobs`` (all, by state, by worker), ``counts(now)`` and ``get`` of
every live or just-touched id, field by field; ``seq`` values must sort like the
model's and never change for a job (a requeued job keeps its old one).

All examples of one test share one storage location (opening a fresh SQL schema
or Redis namespace per example would dominate the run time); the storage is
emptied through its own ``recover`` and ``delete`` before each example, and ids
carry a per-example nonce so no id is ever reused.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import fields, replace

from hypothesis import settings as Settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from conformance.model import Model, ModelJob
from conformance.records import check_types
from exqueue.storage import (
    DEAD,
    PERSISTENT,
    RUNNING,
    STATES,
    WORKER_LOST,
    JobRecord,
    JobState,
    NewJob,
    Storage,
)

StorageFactory = Callable[[], Storage]

#: The fake clock starts at a realistic epoch time (a backend that keeps times in
#: single precision or whole seconds cannot pass), and moves on a 0.5 s grid.
T0 = 1_700_000_000.0
#: Far enough in the future that every lease of an example has expired.
FAR = T0 + 10_000_000.0
LIST_ALL = 10_000

WORKERS = ("app.mail", "app.report", "app.ünïcødé · 名前 ✓")
SERIAL_WORKERS = ("app.serial_a", "app.serial_b")
ALL_WORKERS = WORKERS + SERIAL_WORKERS
OWNERS = ("node-1", "node-2", "nœud-3")

workers = st.sampled_from(ALL_WORKERS)
delays = st.sampled_from((0.0, 0.0, 0.5, 1.0, 2.0, 5.0, -1.0))
leases = st.sampled_from((0.5, 1.0, 2.0, 30.0))
payloads = st.binary(max_size=12)
attempts = st.integers(min_value=1, max_value=3)


class StorageSession:
    """One backend location reused by every example of a test."""

    def __init__(self, factory: StorageFactory) -> None:
        self.factory = factory
        self.storage: Storage | None = None

    def fresh(self) -> Storage:
        """The open storage, emptied of whatever an earlier example left."""
        if self.storage is None:
            self.storage = self.factory()
        storage = self.storage
        storage.recover(FAR, error="conformance: emptying the store between examples")
        for _ in range(50):
            left = storage.list_jobs(limit=LIST_ALL)
            if not left:
                return storage
            for record in left:
                storage.delete(record.id)
        raise AssertionError(
            "the storage could not be emptied between examples with recover() and "
            f"delete(); still there: {[r.id for r in storage.list_jobs(limit=10)]}"
        )

    def reopen(self) -> Storage:
        """Close the storage and open a new object over the same data."""
        if self.storage is not None:
            self.storage.close()
            self.storage.close()  # close() must be idempotent
        self.storage = None
        self.storage = self.factory()
        return self.storage

    def close(self) -> None:
        if self.storage is not None:
            self.storage.close()
            self.storage = None


def _diff(record: JobRecord, expected: JobRecord) -> str:
    rows = [
        f"  {f.name}: got {getattr(record, f.name)!r}, expected {getattr(expected, f.name)!r}"
        for f in fields(JobRecord)
        if getattr(record, f.name) != getattr(expected, f.name)
    ]
    return f"job {expected.id!r} differs from the model:\n" + "\n".join(rows)


class StorageMachine(RuleBasedStateMachine):
    """Random sequences of storage operations, checked against the model after each step."""

    def __init__(self, session: StorageSession) -> None:
        super().__init__()
        self.session = session
        self.storage = session.fresh()
        self.capabilities = frozenset(self.storage.capabilities)
        self.model = Model()
        self.now = T0
        self.nonce = uuid.uuid4().hex[:8]
        self.counter = 0
        # (job id, token) of every claim so far: the current ones and the stale ones.
        self.issued: list[tuple[str, str]] = []
        self.by_token: dict[str, list[str]] = {}
        # The backend's seq of each job, as first seen; it must never change.
        self.real_seq: dict[str, int] = {}
        self.known: list[str] = []
        self.touched: set[str] = set()

    # -- helpers ----------------------------------------------------------------------

    def _next(self, kind: str) -> str:
        self.counter += 1
        return f"{kind}-{self.nonce}-{self.counter}"

    def _new_job(self, worker: str, delay: float, max_attempts: int, payload: bytes) -> NewJob:
        return NewJob(
            id=self._next("job"),
            worker=worker,
            payload=payload,
            run_at=self.now + delay,
            enqueued_at=self.now,
            max_attempts=max_attempts,
        )

    def _expected(self, job: ModelJob, seq: int) -> JobRecord:
        return JobRecord(
            id=job.id,
            seq=seq,
            worker=job.worker,
            payload=job.payload,
            state=job.state,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            run_at=job.run_at,
            enqueued_at=job.enqueued_at,
            errors=tuple(job.errors),
            lease_owner=job.lease_owner,
            lease_token=job.lease_token,
            lease_expires=job.lease_expires,
        )

    def _check(self, record: JobRecord) -> None:
        """``record`` equals the model's job, field by field, and keeps its seq."""
        job = self.model.jobs.get(record.id)
        assert job is not None, f"the backend has job {record.id!r}, the model has none"
        check_types(record)
        seq = self.real_seq.setdefault(record.id, record.seq)
        assert record.seq == seq, f"job {record.id!r} changed its seq from {seq} to {record.seq}"
        expected = self._expected(job, seq)
        # errors may come back as any sequence; their values and order are what count.
        if replace(record, errors=tuple(record.errors)) != expected:
            raise AssertionError(_diff(record, expected))

    def _pair(self, data: st.DataObject, held_bias: bool) -> tuple[str, str]:
        held = [(j.id, j.lease_token or "") for j in self.model.ordered() if j.state == RUNNING]
        if held_bias and held and data.draw(st.integers(0, 4), label="pick held") > 0:
            return data.draw(st.sampled_from(held), label="held (id, token)")
        return data.draw(st.sampled_from(self.issued), label="issued (id, token)")

    def _stale(self) -> list[tuple[str, str]]:
        stale = [pair for pair in self.issued if self.model.held(*pair) is None]
        # A running job with a token nobody was given is as stale as it gets.
        stale += [
            (j.id, "token-never-issued") for j in self.model.jobs.values() if j.state == RUNNING
        ]
        return stale

    # -- enqueue ----------------------------------------------------------------------

    def _enqueue(self, batch: Sequence[NewJob]) -> None:
        accepted = self.model.enqueue(batch)
        if accepted:
            self.storage.enqueue(batch)
            self.known.extend(job.id for job in batch)
        else:
            try:
                self.storage.enqueue(batch)
            except ValueError:
                pass
            else:
                raise AssertionError(
                    f"enqueue of a batch with a duplicate id {[j.id for j in batch]} "
                    "did not raise ValueError"
                )
        self.touched.update(job.id for job in batch)

    @rule(worker=workers, delay=delays, max_attempts=attempts, payload=payloads)
    def enqueue_one(self, worker: str, delay: float, max_attempts: int, payload: bytes) -> None:
        self._enqueue([self._new_job(worker, delay, max_attempts, payload)])

    @rule(
        data=st.data(),
        size=st.integers(0, 5),
        duplicate=st.sampled_from((None,) * 4 + ("batch", "stored")),
    )
    def enqueue_batch(self, data: st.DataObject, size: int, duplicate: str | None) -> None:
        batch = [
            self._new_job(
                data.draw(workers, label="worker"),
                data.draw(delays, label="delay"),
                data.draw(attempts, label="max_attempts"),
                data.draw(payloads, label="payload"),
            )
            for _ in range(size)
        ]
        dup_id = None
        if duplicate == "batch" and batch:
            dup_id = data.draw(st.sampled_from([job.id for job in batch]), label="dup of")
        elif duplicate == "stored" and self.model.jobs:
            dup_id = data.draw(st.sampled_from(sorted(self.model.jobs)), label="dup of stored")
        if dup_id is not None:
            twin = self._new_job(data.draw(workers, label="dup worker"), 0.0, 1, b"duplicate")
            at = data.draw(st.integers(0, len(batch)), label="dup position")
            batch.insert(at, replace(twin, id=dup_id))
        self._enqueue(batch)

    # -- claim and the holder's operations ------------------------------------------

    @rule(
        worker=workers,
        limit=st.sampled_from((0, 1, 1, 2, 3, 10)),
        owner=st.sampled_from(OWNERS),
        lease=leases,
    )
    def claim(self, worker: str, limit: int, owner: str, lease: float) -> None:
        token = self._next("token")
        serial = worker in SERIAL_WORKERS
        kwargs = dict(now=self.now, owner=owner, token=token, lease_until=self.now + lease)
        expected = self.model.claim(worker, limit, serial=serial, **kwargs)  # type: ignore[arg-type]
        got = self.storage.claim(worker, limit, serial=serial, **kwargs)  # type: ignore[arg-type]
        assert [r.id for r in got] == expected, (
            f"claim({worker!r}, {limit}, serial={serial}, now={self.now}) returned "
            f"{[r.id for r in got]}, expected {expected} (in this order)"
        )
        for record in got:
            self._check(record)
            self.issued.append((record.id, token))
        self.by_token[token] = list(expected)
        self.touched.update(expected)

    @precondition(lambda self: self.issued)
    @rule(data=st.data())
    def succeed(self, data: st.DataObject) -> None:
        job_id, token = self._pair(data, held_bias=True)
        expected = self.model.complete(job_id, token)
        assert self.storage.complete(job_id, token) is expected, (
            f"complete({job_id!r}, {token!r}) should return {expected}"
        )
        self.touched.add(job_id)

    @precondition(lambda self: self.issued)
    @rule(data=st.data(), delay=delays)
    def fail_and_retry(self, data: st.DataObject, delay: float) -> None:
        job_id, token = self._pair(data, held_bias=True)
        error = f"boom ✗ {self._next('error')}"
        run_at = self.now + abs(delay)
        expected = self.model.retry(job_id, token, run_at=run_at, error=error)
        got = self.storage.retry(job_id, token, run_at=run_at, error=error)
        assert got is expected, f"retry({job_id!r}, {token!r}) should return {expected}"
        self.touched.add(job_id)

    @precondition(lambda self: self.issued)
    @rule(data=st.data())
    def fail_into_dead(self, data: st.DataObject) -> None:
        job_id, token = self._pair(data, held_bias=True)
        error = f"Traceback …\nValueError: dead ✗ {self._next('error')}"
        expected = self.model.bury(job_id, token, error=error)
        got = self.storage.bury(job_id, token, error=error)
        assert got is expected, f"bury({job_id!r}, {token!r}) should return {expected}"
        self.touched.add(job_id)

    @precondition(lambda self: self.issued)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        job_id, token = self._pair(data, held_bias=True)
        expected = self.model.release(job_id, token)
        got = self.storage.release(job_id, token)
        assert got is expected, f"release({job_id!r}, {token!r}) should return {expected}"
        self.touched.add(job_id)

    @precondition(lambda self: self.by_token)
    @rule(data=st.data(), lease=leases)
    def extend(self, data: st.DataObject, lease: float) -> None:
        token = data.draw(st.sampled_from(sorted(self.by_token)), label="token")
        mine = self.by_token[token]
        ids: list[str] = []
        if mine:
            ids = data.draw(st.lists(st.sampled_from(mine), unique=True), label="ids")
        add_foreign: bool = data.draw(st.booleans(), label="add a foreign id")
        if self.known and add_foreign:
            other = data.draw(st.sampled_from(self.known), label="foreign id")
            if other not in ids:
                ids.append(other)
        lease_until = self.now + lease
        expected = self.model.extend(token, ids, lease_until)
        got = self.storage.extend(token, ids, lease_until)
        assert sorted(got) == sorted(expected), (
            f"extend({token!r}, {ids}) extended {sorted(got)}, expected {sorted(expected)}"
        )
        self.touched.update(ids)

    @precondition(lambda self: self._stale())
    @rule(
        data=st.data(),
        operation=st.sampled_from(("complete", "retry", "bury", "release", "extend")),
    )
    def stale_holder(self, data: st.DataObject, operation: str) -> None:
        """A holder whose lease was lost (or never held) is refused and changes nothing."""
        job_id, token = data.draw(st.sampled_from(self._stale()), label="stale (id, token)")
        if operation == "complete":
            result: object = self.storage.complete(job_id, token)
        elif operation == "retry":
            result = self.storage.retry(job_id, token, run_at=self.now, error="stale")
        elif operation == "bury":
            result = self.storage.bury(job_id, token, error="stale")
        elif operation == "release":
            result = self.storage.release(job_id, token)
        else:
            result = self.storage.extend(token, [job_id], self.now + 100.0)
        refused: object = [] if operation == "extend" else False
        assert result == refused, (
            f"{operation} with a stale token {token!r} on {job_id!r} returned {result!r}, "
            f"expected {refused!r} (the holder lost its lease)"
        )
        self.touched.add(job_id)

    # -- time and recovery ------------------------------------------------------------

    @rule(dt=st.sampled_from((0.5, 1.0, 2.0, 5.0, 30.0)))
    def advance_clock(self, dt: float) -> None:
        self.now += dt

    def _recover(self, owner: str | None) -> None:
        back, died = self.model.recover(self.now, owner=owner, error=WORKER_LOST)
        got = self.storage.recover(self.now, owner=owner, error=WORKER_LOST)
        # The order of ids inside Recovered is not part of the contract; duplicates are wrong.
        assert sorted(got.waiting) == sorted(back) and sorted(got.dead) == sorted(died), (
            f"recover(now={self.now}, owner={owner!r}) returned waiting={sorted(got.waiting)} "
            f"dead={sorted(got.dead)}, expected waiting={sorted(back)} dead={sorted(died)}"
        )
        self.touched.update(back)
        self.touched.update(died)

    @precondition(lambda self: any(j.state == RUNNING for j in self.model.jobs.values()))
    @rule(latest=st.booleans())
    def let_leases_expire(self, latest: bool) -> None:
        """Jump to the earliest (or latest) lease expiry, then recover without an owner."""
        expiries = [
            j.lease_expires
            for j in self.model.jobs.values()
            if j.state == RUNNING and j.lease_expires is not None
        ]
        self.now = max(self.now, max(expiries) if latest else min(expiries))
        self._recover(None)

    @rule(owner=st.one_of(st.none(), st.sampled_from(OWNERS)))
    def recover(self, owner: str | None) -> None:
        self._recover(owner)

    # -- manual operations ------------------------------------------------------------

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        choices = self.known + [f"missing-{self.nonce}"]
        job_id = data.draw(st.sampled_from(choices), label="delete id")
        expected = self.model.delete(job_id)
        got = self.storage.delete(job_id)
        assert got == expected, f"delete({job_id!r}) returned {got!r}, expected {expected!r}"
        self.touched.add(job_id)

    @precondition(lambda self: self.known)
    @rule(data=st.data())
    def requeue_dead(self, data: st.DataObject) -> None:
        dead = [j.id for j in self.model.ordered() if j.state == DEAD]
        prefer_dead: int = data.draw(st.integers(0, 3), label="pick dead")
        pool = dead if dead and prefer_dead else self.known
        job_id = data.draw(st.sampled_from(pool), label="requeue id")
        new_id = self._next("requeued")
        old_seq = self.real_seq.get(job_id)
        expected = self.model.requeue(job_id, new_id, now=self.now)
        got = self.storage.requeue(job_id, new_id, now=self.now)
        assert got == expected, f"requeue({job_id!r}) returned {got!r}, expected {expected!r}"
        if expected == "requeued":
            self.known.append(new_id)
            if old_seq is not None:
                # A manual retry keeps its place in line: the very same seq.
                self.real_seq[new_id] = old_seq
        self.touched.update((job_id, new_id))

    @precondition(lambda self: PERSISTENT in self.capabilities)
    @rule()
    def close_and_reopen(self) -> None:
        self.storage = self.session.reopen()
        self.touched.update(self.known)

    @rule(
        data=st.data(),
        state=st.one_of(st.none(), st.sampled_from(STATES)),
        worker=st.one_of(st.none(), workers),
        limit=st.integers(0, 6),
    )
    def list_page(
        self, data: st.DataObject, state: JobState | None, worker: str | None, limit: int
    ) -> None:
        model_after = real_after = None
        live = self.model.ordered()
        paged: bool = data.draw(st.booleans(), label="page after a job")
        if live and paged:
            job = data.draw(st.sampled_from(live), label="after job")
            model_after, real_after = job.seq, self.real_seq.get(job.id)
            if real_after is None:
                return
        expected = self.model.list_jobs(
            state=state, worker=worker, limit=limit, after_seq=model_after
        )
        got = self.storage.list_jobs(state=state, worker=worker, limit=limit, after_seq=real_after)
        assert [r.id for r in got] == expected, (
            f"list_jobs(state={state!r}, worker={worker!r}, limit={limit}, after_seq="
            f"{real_after}) returned {[r.id for r in got]}, expected {expected}"
        )

    # -- the observation after every step ----------------------------------------------

    @invariant()
    def observe(self) -> None:
        expected_ids = [job.id for job in self.model.ordered()]
        everything = self.storage.list_jobs(limit=LIST_ALL)
        assert [r.id for r in everything] == expected_ids, (
            f"list_jobs() returned {[r.id for r in everything]}, expected {expected_ids} "
            "(every stored job, in seq order)"
        )
        for record in everything:
            self._check(record)
        seqs = [r.seq for r in everything]
        assert all(a < b for a, b in zip(seqs, seqs[1:], strict=False)), (
            f"seq values are not strictly increasing in list order: {seqs}"
        )
        for state in STATES:
            got_ids = [r.id for r in self.storage.list_jobs(state=state, limit=LIST_ALL)]
            want = self.model.list_jobs(state=state, limit=LIST_ALL)
            assert got_ids == want, (
                f"list_jobs(state={state!r}) returned {got_ids}, expected {want}"
            )
        for worker in ALL_WORKERS:
            got_ids = [r.id for r in self.storage.list_jobs(worker=worker, limit=LIST_ALL)]
            want = self.model.list_jobs(worker=worker, limit=LIST_ALL)
            assert got_ids == want, (
                f"list_jobs(worker={worker!r}) returned {got_ids}, expected {want}"
            )
        counts = self.storage.counts(self.now)
        want_counts = self.model.counts(self.now)
        assert counts == want_counts, (
            f"counts(now={self.now}) returned {counts}, expected {want_counts}"
        )
        for job_id in sorted(self.touched | set(self.model.jobs)):
            found = self.storage.get(job_id)
            if job_id in self.model.jobs:
                assert found is not None, f"get({job_id!r}) returned None; the job exists"
                self._check(found)
            else:
                assert found is None, f"get({job_id!r}) returned a job; it should be gone"
        self.touched.clear()


def run_state_machine(factory: StorageFactory, settings: Settings) -> None:
    """Run the state machine against storages made by ``factory`` (raises on failure)."""
    session = StorageSession(factory)
    try:
        # Hypothesis accepts any zero-argument factory here; its stub says "type".
        run_state_machine_as_test(
            lambda: StorageMachine(session),  # type: ignore[arg-type]
            settings=settings,
        )
    finally:
        session.close()
