"""The stateful check: a Hypothesis state machine drives a backend and the model side by side.

Each rule applies one storage operation to both the real backend and
:class:`~conformance.model.Model`, with a fake clock (plain floats, mostly on a 0.5 s
grid so equal ``run_at`` values are common, with microsecond steps too), and compares
what the call returned. After every step :meth:`StorageMachine.observe`
(:mod:`conformance.observation`) compares everything a caller can see:
``list_jobs`` (all, by state, by worker), ``counts(now)`` and ``get`` of every
live or just-touched id, field by field; ``seq`` values must sort like the
model's and never change for a job (a requeued job keeps its old one). The
protocol-2 fields are drawn by :mod:`conformance.machine_v2`, and the shared
location and clock live in :mod:`conformance.session`.

All examples of one test share one storage location (opening a fresh SQL schema
or Redis namespace per example would dominate the run time); the storage is
emptied through its own ``recover`` and ``delete`` before each example, and ids
carry a per-example nonce so no id is ever reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from hypothesis import settings as Settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from conformance.error_history import fail_often
from conformance.machine_base import ModelledMachine
from conformance.machine_v2 import ProtocolTwoRules
from conformance.observation import observe
from conformance.session import (
    ALL_WORKERS,
    OWNERS,
    SERIAL_WORKERS,
    StorageFactory,
    StorageSession,
)
from exqueue.storage import (
    COMPLETE_MANY,
    DEAD,
    ERRORS_KEPT,
    EXPIRY,
    FINISH_AND_CLAIM,
    PERSISTENT,
    RUNNING,
    STATES,
    UNIQUE,
    WAITING,
    WORKER_LOST,
    FinishAndClaim,
    JobState,
    NewJob,
)

workers = st.sampled_from(ALL_WORKERS)
delays = st.sampled_from((0.0, 0.0, 0.5, 1.0, 2.0, 5.0, -1.0, 0.000001, 0.123457))
#: Error texts cycle through repeats, newlines, long and non-ASCII ones.
ERRORS = ("boom ✗", "Traceback …\nValueError: dead ✗", "e" * 300, "  ошибка 名前 ")
leases = st.sampled_from((0.5, 1.0, 2.0, 30.0))
payloads = st.binary(max_size=12)
attempts = st.integers(min_value=1, max_value=3)


class StorageMachine(ProtocolTwoRules, ModelledMachine):
    """Random sequences of storage operations, checked against the model after each step."""

    def __init__(self, session: StorageSession) -> None:
        super().__init__(session)
        self.known: list[str] = []
        self.touched: set[str] = set()
        self.observed = 0

    # -- helpers ----------------------------------------------------------------------

    def _new_job(
        self, worker: str, delay: float, max_attempts: int, payload: bytes, **v2: Any
    ) -> NewJob:
        return NewJob(
            id=self._next("job"),
            worker=worker,
            payload=payload,
            run_at=self.now + delay,
            enqueued_at=self.now,
            max_attempts=max_attempts,
            **v2,
        )

    def _pick_job(self, data: st.DataObject, label: str) -> str:
        """An id, evenly by kind: waiting, running, dead, gone (removed) or never stored.

        Drawing from every id ever seen would mostly pick finished jobs; the
        transitions worth testing are on jobs in each state.
        """
        pools: dict[str, list[str]] = {
            state: [j.id for j in self.model.ordered() if j.state == state] for state in STATES
        }
        pools["gone"] = [i for i in self.known if i not in self.model.jobs]
        pools["never"] = [f"missing-{self.nonce}"]
        kinds = [kind for kind, ids in pools.items() if ids]
        kind = data.draw(st.sampled_from(kinds), label=f"{label}: kind")
        return data.draw(st.sampled_from(pools[kind]), label=label)

    def _holder(self, data: st.DataObject) -> tuple[str, str]:
        """(id, token): usually a current holder, else a stale one.

        Stale comes in two kinds, drawn evenly: a job that is running under another
        token (an older token of the same job, or one never issued), and a job
        that is no longer running at all.
        """
        held = [(j.id, j.lease_token or "") for j in self.model.ordered() if j.state == RUNNING]
        lost = [pair for pair in self.issued if self.model.held(*pair) is None]
        running = {job_id for job_id, _ in held}
        pools = [
            held,
            # From ``held``, not the set: set order follows string hashes, which
            # differ between replays (ids carry a per-run nonce), and Hypothesis
            # needs the same draws to give the same pools.
            [p for p in lost if p[0] in running] + [(i, "token-never-issued") for i, _ in held],
            [p for p in lost if p[0] not in running],
        ]
        kind: int = data.draw(st.sampled_from((0, 0, 0, 1, 1, 2)), label="holder kind")
        pool = pools[kind] or next(p for p in pools if p)
        return data.draw(st.sampled_from(pool), label="(id, token)")

    @initialize(size=st.integers(0, 4), worker=workers)
    def start_with_jobs(self, size: int, worker: str) -> None:
        """Every example starts with runnable jobs: two of a serial type, and a few more."""
        self._enqueue(
            [self._new_job(SERIAL_WORKERS[0], 0.0, 2, b"") for _ in range(2)]
            + [self._new_job(worker, 0.0, 2, b"") for _ in range(size)]
        )

    # The rules are few and broad, each drawing which variant to run, and they
    # check their own prerequisites instead of using @precondition: Hypothesis
    # switches random subsets of rules off per example and picks preconditioned
    # rules markedly less often, so with a rule per operation the holder's
    # operations (which need a claimed job first) came too seldom to find bugs
    # in a short run.

    # -- enqueue ----------------------------------------------------------------------

    def _enqueue(self, batch: Sequence[NewJob]) -> None:
        answers = self.model.enqueue(batch)
        if answers is not None:
            self._holders_match(batch, answers, self.storage.enqueue(batch))
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

    @rule(
        data=st.data(),
        size=st.sampled_from((1, 1, 1, 0, 2, 3, 5)),
        duplicate=st.sampled_from((None,) * 5 + ("in batch", "stored")),
    )
    def enqueue(self, data: st.DataObject, size: int, duplicate: str | None) -> None:
        """One job or a batch, runnable now or scheduled; sometimes with a duplicate id.

        With UNIQUE, sometimes a batch of keyed jobs over a few keys (duplicates likely).
        """
        keyed = UNIQUE in self.capabilities and data.draw(st.integers(0, 2), label="keyed") == 0
        if keyed:
            self._enqueue_with_dup(data, self._keyed_batch(data, max(size, 1)), duplicate)
            return
        batch = [
            self._new_job(
                data.draw(workers, label="worker"),
                data.draw(delays, label="delay"),
                data.draw(attempts, label="max_attempts"),
                data.draw(payloads, label="payload"),
                **self._v2_fields(data),
            )
            for _ in range(size)
        ]
        self._enqueue_with_dup(data, batch, duplicate)

    def _enqueue_with_dup(
        self, data: st.DataObject, batch: list[NewJob], duplicate: str | None
    ) -> None:
        dup_id = None
        if duplicate == "in batch" and batch:
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
        data=st.data(),
        limit=st.sampled_from((0, 1, 1, 2, 3, 10)),
        owner=st.sampled_from(OWNERS),
        lease=leases,
    )
    def claim(self, data: st.DataObject, limit: int, owner: str, lease: float) -> None:
        # Mostly claim a worker type that has waiting jobs: a uniformly drawn one
        # would be empty most of the time.
        busy = sorted({j.worker for j in self.model.jobs.values() if j.state == WAITING})
        aim: int = data.draw(st.integers(0, 3), label="aim at a busy worker")
        worker = data.draw(st.sampled_from(busy) if busy and aim else workers, label="worker")
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
        self.touched.update(expected)
        # A node stopping with claimed but unstarted jobs (a prefetch buffer) gives
        # them straight back.
        give_back: bool = data.draw(st.integers(0, 3), label="give one back") == 0
        if expected and give_back:
            self._report("release", expected[-1], token, 0.0)

    @rule(
        data=st.data(),
        outcome=st.sampled_from(("succeed", "fail and retry", "fail into dead", "release")),
        delay=delays,
    )
    def finish(self, data: st.DataObject, outcome: str, delay: float) -> None:
        """The holder reports: success, a retryable failure, death, or a graceful release.

        With a stale holder (lease lost, or a token never issued) the call must be
        refused and change nothing; the model says which it is.
        """
        if not self.issued:
            return
        job_id, token = self._holder(data)
        if self.model.held(job_id, token) is not None:
            # A zombie first: an earlier holder of this job (or a made-up token)
            # reports the same outcome; it must be refused before the real one lands.
            old = [t for i, t in self.issued if i == job_id and t != token]
            self._report(outcome, job_id, old[-1] if old else "token-never-issued", delay)
        self._report(outcome, job_id, token, delay)

    def _error(self, job_id: str) -> str:
        # Pairs of equal texts: a job's 1st and 2nd errors are identical, its 3rd
        # and 4th; jobs start at different texts. A refused call draws one too.
        job = self.model.jobs.get(job_id)
        if job is None:
            return ERRORS[0]
        return ERRORS[(len(job.errors) // 2 + job.seq) % len(ERRORS)]

    @rule(times=st.integers(ERRORS_KEPT, ERRORS_KEPT + 4))
    def fail_often(self, times: int) -> None:
        """One job fails ``times`` times running: past the error history it keeps."""
        fail_often(self, times)

    def _report(self, outcome: str, job_id: str, token: str, delay: float) -> None:
        call = f"{outcome}: ({job_id!r}, {token!r})"
        if outcome == "succeed":
            # The time of completion starts a unique period (protocol 2).
            if UNIQUE in self.capabilities:
                expected = self.model.complete(job_id, token, now=self.now)
                got = self.storage.complete(job_id, token, now=self.now)
            else:
                expected = self.model.complete(job_id, token)
                got = self.storage.complete(job_id, token)
        elif outcome == "fail and retry":
            error = self._error(job_id)
            run_at = self.now + abs(delay)
            expected = self.model.schedule_retry(job_id, token, run_at=run_at, error=error)
            got = self.storage.schedule_retry(job_id, token, run_at=run_at, error=error)
        elif outcome == "fail into dead":
            error = self._error(job_id)
            expected = self.model.bury(job_id, token, error=error)
            got = self.storage.bury(job_id, token, error=error)
        else:
            expected = self.model.release(job_id, token)
            got = self.storage.release(job_id, token)
        assert got is expected, f"{call} returned {got!r}, expected {expected!r}" + (
            "" if expected else " (the holder does not hold the lease)"
        )
        self.touched.add(job_id)

    @rule(data=st.data(), size=st.integers(1, 4))
    def succeed_many(self, data: st.DataObject, size: int) -> None:
        """COMPLETE_MANY: a batch of successes; only the pairs still held are removed.

        With FINISH_AND_CLAIM, half the time the batch goes with a claim, in one call.
        """
        many, both = COMPLETE_MANY in self.capabilities, FINISH_AND_CLAIM in self.capabilities
        if not (many or both) or not self.issued:
            return
        items: list[tuple[str, str]] = []
        for _ in range(size):
            job_id, token = self._holder(data)
            if all(job_id != i for i, _ in items):
                items.append((job_id, token))
        if both and (not many or data.draw(st.booleans(), label="and claim")):
            self._finish_and_claim(data, items)
            return
        if UNIQUE in self.capabilities:
            now: float | None = self.now
            got = self.storage.complete_many(items, now=now)  # type: ignore[attr-defined]
        else:
            now = None
            got = self.storage.complete_many(items)  # type: ignore[attr-defined]
        expected = [job_id for job_id, t in items if self.model.complete(job_id, t, now=now)]
        assert sorted(got) == sorted(expected), (
            f"complete_many({items}) removed {sorted(got)}, expected {sorted(expected)}"
        )
        self.touched.update(job_id for job_id, _ in items)

    def _finish_and_claim(self, data: st.DataObject, items: list[tuple[str, str]]) -> None:
        """FINISH_AND_CLAIM: successes, then a claim, in one call; as complete_many then claim.

        The worker claimed is mostly the first held success's own: a serial type's
        next head must come back in the same call (the claim sees the successes).
        """
        limit: int = data.draw(st.sampled_from((0, 1, 1, 2, 3)), label="limit")
        owner: str = data.draw(st.sampled_from(OWNERS), label="owner")
        lease: float = data.draw(leases, label="lease")
        held = [job for job in (self.model.held(*pair) for pair in items) if job is not None]
        first = held[0] if held else None
        own: int = data.draw(st.integers(0, 3), label="claim the first success's worker")
        if first is not None and own:
            worker = first.worker
        else:
            worker = data.draw(workers, label="worker")
        request = FinishAndClaim(
            done=items,
            worker=worker,
            limit=limit,
            now=self.now,
            owner=owner,
            token=self._next("token"),
            lease_until=self.now + lease,
            serial=worker in SERIAL_WORKERS,
        )
        expected_done, expected = self.model.finish_and_claim(
            items,
            worker,
            limit,
            now=self.now,
            owner=owner,
            token=request.token,
            lease_until=request.lease_until,
            serial=request.serial,
        )
        got = self.storage.finish_and_claim(request)  # type: ignore[attr-defined]
        call = f"finish_and_claim(done={items}, {worker!r}, {limit}, serial={request.serial})"
        assert list(got.completed) == expected_done, (
            f"{call} completed {list(got.completed)}, expected {expected_done} "
            "(the pairs still held, in order)"
        )
        assert [r.id for r in got.claimed] == expected, (
            f"{call} claimed {[r.id for r in got.claimed]}, expected {expected} (in this "
            "order, claimed after the successes were recorded)"
        )
        for record in got.claimed:
            self._check(record)
            self.issued.append((record.id, request.token))
        self.touched.update(job_id for job_id, _ in items)
        self.touched.update(expected)

    @rule(data=st.data(), lease=leases)
    def extend(self, data: st.DataObject, lease: float) -> None:
        """A heartbeat extends the leases of one token's jobs; others' jobs are not touched."""
        if not self.issued:
            return
        _, token = self._holder(data)
        mine = [job_id for job_id, t in self.issued if t == token]
        ids: list[str] = []
        if mine:
            ids = data.draw(st.lists(st.sampled_from(mine), unique=True), label="ids")
        add_foreign: bool = data.draw(st.booleans(), label="add another's job")
        if add_foreign:
            theirs = [
                j.id
                for j in self.model.ordered()
                if j.state == RUNNING and j.lease_token != token and j.id not in ids
            ]
            other = (
                data.draw(st.sampled_from(theirs), label="another holder's job")
                if theirs
                else self._pick_job(data, "another's job")
            )
            if other not in ids:
                ids.append(other)
        lease_until = self.now + lease
        expected = self.model.extend(token, ids, lease_until)
        got = self.storage.extend(token, ids, lease_until)
        assert sorted(got) == sorted(expected), (
            f"extend({token!r}, {ids}) extended {sorted(got)}, expected {sorted(expected)}"
        )
        self.touched.update(ids)

    # -- time and recovery ------------------------------------------------------------

    @rule(
        data=st.data(),
        what=st.sampled_from(
            (
                "advance",
                "advance",
                "expire earliest",
                "expire latest",
                "recover",
                "recover owner",
                "expire jobs",
            )
        ),
    )
    def time_passes(self, data: st.DataObject, what: str) -> None:
        """The clock moves on; leases expire; a node recovers (all, or one owner's jobs).

        With EXPIRY, "expire jobs" calls expire(now) (else the clock moves on).
        """
        if what == "expire jobs" and EXPIRY in self.capabilities:
            self._expire_due(data)
            return
        expiries = [
            j.lease_expires
            for j in self.model.jobs.values()
            if j.state == RUNNING and j.lease_expires is not None
        ]
        owner = None
        if what in ("advance", "expire jobs") or (what.startswith("expire") and not expiries):
            self.now += data.draw(st.sampled_from((0.5, 1.0, 2.0, 5.0, 30.0)), label="dt")
            return
        if what == "expire earliest":
            self.now = max(self.now, min(expiries))
        elif what == "expire latest":
            self.now = max(self.now, max(expiries))
        elif what == "recover owner":
            owner = data.draw(st.sampled_from(OWNERS), label="owner")
        error = f"{WORKER_LOST} ✗ {self.now}"  # the text given, not a fixed one, is recorded
        back, died = self.model.recover(self.now, owner=owner, error=error)
        got = self.storage.recover(self.now, owner=owner, error=error)
        # The order of ids inside Recovered is not part of the contract; duplicates are wrong.
        assert sorted(got.waiting) == sorted(back) and sorted(got.dead) == sorted(died), (
            f"recover(now={self.now}, owner={owner!r}) returned waiting={sorted(got.waiting)} "
            f"dead={sorted(got.dead)}, expected waiting={sorted(back)} dead={sorted(died)}"
        )
        self.touched.update(back)
        self.touched.update(died)

    # -- manual operations ------------------------------------------------------------

    @rule(data=st.data(), pick=st.integers(0, 2))
    def by_hand(self, data: st.DataObject, pick: int) -> None:
        """A person deletes a job, or retries a dead one (it keeps its seq).

        The job is drawn evenly by kind (waiting, running, dead, removed, never
        stored); a dead one is mostly retried, any other mostly deleted.
        """
        job_id = self._pick_job(data, "job")
        job = self.model.jobs.get(job_id)
        dead = job is not None and job.state == DEAD
        if dead == (pick == 0):
            expected = self.model.delete(job_id)
            deleted = self.storage.delete(job_id)
            assert deleted == expected, (
                f"delete({job_id!r}) returned {deleted!r}, expected {expected!r}"
            )
            self.touched.add(job_id)
            return
        new_id = self._next("requeued")
        old_seq = self.real_seq.get(job_id)
        expected = self.model.requeue(job_id, new_id, now=self.now)
        requeued = self.storage.requeue(job_id, new_id, now=self.now)
        assert requeued == expected, (
            f"requeue({job_id!r}) returned {requeued!r}, expected {expected!r}"
        )
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
        """A page of list_jobs with any filter (a tag too, with METADATA), limit and after_seq."""
        tag = self._tag(data)
        model_after = real_after = None
        live = self.model.ordered()
        paged: bool = data.draw(st.booleans(), label="page after a job")
        if live and paged:
            job = data.draw(st.sampled_from(live), label="after job")
            model_after, real_after = job.seq, self.real_seq.get(job.id)
            if real_after is None:
                return
        if self._scan_page(data, (state, worker, tag), limit, model_after, real_after):
            return
        expected = self.model.list_jobs(
            state=state, worker=worker, limit=limit, after_seq=model_after, tag=tag
        )
        filters: dict[str, Any] = {"tag": tag} if tag is not None else {}
        got = self.storage.list_jobs(
            state=state, worker=worker, limit=limit, after_seq=real_after, **filters
        )
        assert [r.id for r in got] == expected, (
            f"list_jobs(state={state!r}, worker={worker!r}, limit={limit}, after_seq="
            f"{real_after}, tag={tag!r}) returned {[r.id for r in got]}, expected {expected}"
        )

    # -- the observation after every step ----------------------------------------------

    @invariant()
    def observe(self) -> None:
        observe(self)


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
