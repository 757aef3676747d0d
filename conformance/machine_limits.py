"""The limits state machine: limited claims, partitions, rate windows and pause vs the model.

A machine of its own, beside :mod:`conformance.machine`: adding rules there
would change which sequences that machine's derandomized search draws (and it
once stopped finding a broken backend that way). Four worker types carry fixed
:class:`~exqueue.storage.Limits` (concurrency; concurrency per partition; a
rate; both per partition), jobs draw partitions from a small set (``None``
included), and the rules enqueue, claim with ``claim_limited`` (now and then a
plain ``claim``), report outcomes as a holder (current or stale), let time pass
on a fake clock (leases expire, ``recover``), pause and resume, and reopen.
After every step the backend's jobs (every field, ``partition`` included) and
its paused types must equal the model's.

Worker names carry a per-example nonce: the starts of a rate window and the
pauses are not jobs, so emptying the store between examples leaves them; a new
name per example keeps an earlier example's starts out of this one.
"""

from __future__ import annotations

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

from conformance.base import implements
from conformance.limit_races import LIMITS_API
from conformance.limits import PAUSE_API
from conformance.machine_base import ModelledMachine
from conformance.session import LIST_ALL, StorageFactory, StorageSession
from exqueue.storage import (
    PAUSE,
    PERSISTENT,
    PRIORITY,
    RUNNING,
    WORKER_LOST,
    LimitedClaim,
    Limits,
    NewJob,
    SupportsLimits,
    SupportsPause,
)

#: The limited worker types (name stem -> limits); names get a per-example nonce.
LIMITED = {
    "lim.conc": Limits(concurrency=2),
    "lim.part": Limits(concurrency=1, partitioned=True),
    "lim.rate": Limits(rate=2, per=1.0),
    "lim.mixed": Limits(concurrency=2, rate=3, per=2.0, partitioned=True),
}
PARTITIONS = ("a", "b", None, "a:%")
OWNERS = ("node_1", "nodeX1")
#: Examples of this machine at most, whatever the profile: its rules are few.
MAX_EXAMPLES = 15
STEPS = 30


class LimitsMachine(ModelledMachine):
    """Limited claims and pause, checked against the model after each step."""

    def __init__(self, session: StorageSession) -> None:
        super().__init__(session)
        self.limits = {f"{stem}·{self.nonce}": limits for stem, limits in LIMITED.items()}
        self.workers = sorted(self.limits)

    # -- helpers ----------------------------------------------------------------------

    def _claimer(self) -> SupportsLimits:
        return implements(self.storage, SupportsLimits, LIMITS_API)

    def _pauser(self) -> SupportsPause:
        return implements(self.storage, SupportsPause, PAUSE_API)

    def _new_job(self, data: st.DataObject, worker: str) -> NewJob:
        dead = data.draw(st.integers(0, 9), label="dead_error") == 0
        priority = 0
        if PRIORITY in self.capabilities:
            priority = data.draw(st.sampled_from((0, 0, 1, -1)), label="priority")
        return NewJob(
            id=self._next("job"),
            worker=worker,
            payload=b"",
            run_at=self.now + data.draw(st.sampled_from((0.0, 0.0, 0.5, 1.0)), label="delay"),
            enqueued_at=self.now,
            max_attempts=data.draw(st.integers(1, 3), label="max_attempts"),
            priority=priority,
            partition=data.draw(st.sampled_from(PARTITIONS), label="partition"),
            dead_error="partition function raised ✗" if dead else None,
        )

    # -- rules ------------------------------------------------------------------------

    @initialize()
    def start_with_jobs(self) -> None:
        """Every example starts with six runnable jobs of each type over every partition.

        Fixed, not drawn: Hypothesis's first examples draw the simplest values (one
        partition, one job), and a short run must still see partitions and bursts.
        """
        self._enqueue(
            [
                NewJob(
                    id=self._next("job"),
                    worker=worker,
                    payload=b"",
                    run_at=self.now,
                    enqueued_at=self.now,
                    max_attempts=2,
                    partition=PARTITIONS[n % len(PARTITIONS)],
                )
                for worker in self.workers
                for n in range(6)
            ]
        )

    def _enqueue(self, batch: list[NewJob]) -> None:
        answers = self.model.enqueue(batch)
        assert answers is not None
        got = self.storage.enqueue(batch)
        assert got == [new.id for new in batch], (
            f"enqueue({[new.id for new in batch]}) returned {got}, expected their own ids"
        )

    @rule(data=st.data(), size=st.integers(1, 3))
    def enqueue(self, data: st.DataObject, size: int) -> None:
        worker = data.draw(st.sampled_from(self.workers), label="worker")
        self._enqueue([self._new_job(data, worker) for _ in range(size)])

    @rule(
        data=st.data(),
        limit=st.sampled_from((1, 1, 2, 3, 5)),
        owner=st.sampled_from(OWNERS),
        lease=st.sampled_from((0.5, 1.0, 5.0)),
        plain=st.sampled_from((False,) * 7 + (True,)),
    )
    def claim(self, data: st.DataObject, limit: int, owner: str, lease: float, plain: bool) -> None:
        """claim_limited (now and then a plain claim, which no limit bounds)."""
        worker = data.draw(st.sampled_from(self.workers), label="worker")
        token = self._next("token")
        kwargs: dict[str, Any] = dict(
            now=self.now, owner=owner, token=token, lease_until=self.now + lease
        )
        if plain:
            expected = self.model.claim(worker, limit, serial=False, **kwargs)
            got = self.storage.claim(worker, limit, **kwargs)
            call = f"claim({worker!r}, {limit}, now={self.now})"
        else:
            limits = self.limits[worker]
            expected = self.model.claim_limited(worker, limit, limits=limits, **kwargs)
            got = self._claimer().claim_limited(
                LimitedClaim(worker=worker, limit=limit, limits=limits, **kwargs)
            )
            call = f"claim_limited({worker!r}, {limit}, now={self.now}, {limits})"
        assert [r.id for r in got] == expected, (
            f"{call} returned {[r.id for r in got]}, expected {expected} (in this order)"
        )
        for record in got:
            self._check(record)
            self.issued.append((record.id, token))

    @rule(data=st.data(), offset=st.sampled_from((0.25, 0.5, 0.75)))
    def burst(self, data: st.DataObject, offset: float) -> None:
        """A rate-limited type claimed every quarter second for 1.5 s, each job done at once.

        The window slides: a claim may start only when fewer than ``rate`` starts
        fall in ``(now - per, now]``, whatever became of their jobs.
        """
        rated = [w for w in self.workers if self.limits[w].rate is not None]
        worker = data.draw(st.sampled_from(rated), label="worker")
        limits = self.limits[worker]
        self.now += offset
        for step in range(7):
            if step:
                self.now += 0.25
            token = self._next("token")
            kwargs: dict[str, Any] = dict(
                now=self.now, owner=OWNERS[0], token=token, lease_until=self.now + 5.0
            )
            expected = self.model.claim_limited(worker, 3, limits=limits, **kwargs)
            got = self._claimer().claim_limited(
                LimitedClaim(worker=worker, limit=3, limits=limits, **kwargs)
            )
            assert [r.id for r in got] == expected, (
                f"claim_limited({worker!r}, 3, now={self.now}, {limits}) in a burst returned "
                f"{[r.id for r in got]}, expected {expected}"
            )
            for job_id in expected:
                assert self.model.complete(job_id, token)
                assert self.storage.complete(job_id, token), f"complete({job_id!r}) refused"

    @rule(
        data=st.data(),
        outcome=st.sampled_from(("succeed", "retry", "bury", "release")),
        delay=st.sampled_from((0.0, 0.5, 1.0)),
    )
    def finish(self, data: st.DataObject, outcome: str, delay: float) -> None:
        """A holder (mostly a current one, sometimes stale) reports an outcome."""
        held = [(j.id, j.lease_token or "") for j in self.model.ordered() if j.state == RUNNING]
        stale = [pair for pair in self.issued if self.model.held(*pair) is None]
        pool = held if held and (not stale or data.draw(st.integers(0, 3), label="s")) else stale
        if not pool:
            return
        job_id, token = data.draw(st.sampled_from(pool), label="(id, token)")
        if outcome == "succeed":
            expected = self.model.complete(job_id, token)
            got = self.storage.complete(job_id, token)
        elif outcome == "retry":
            run_at = self.now + delay
            expected = self.model.schedule_retry(job_id, token, run_at=run_at, error="e")
            got = self.storage.schedule_retry(job_id, token, run_at=run_at, error="e")
        elif outcome == "bury":
            expected = self.model.bury(job_id, token, error="e")
            got = self.storage.bury(job_id, token, error="e")
        else:
            expected = self.model.release(job_id, token)
            got = self.storage.release(job_id, token)
        assert got is expected, f"{outcome} ({job_id!r}, {token!r}) returned {got}, not {expected}"

    @rule(data=st.data(), what=st.sampled_from(("advance", "advance", "recover")))
    def time_passes(self, data: st.DataObject, what: str) -> None:
        """The clock moves on (windows slide, leases expire), or it moves to the earliest
        lease expiry and expired leases are recovered (their slots come back)."""
        if what == "advance":
            self.now += data.draw(st.sampled_from((0.25, 0.5, 1.0, 2.0)), label="dt")
            return
        # Recover once the earliest lease has run out, so a recovery has work to do.
        expiries = [
            j.lease_expires
            for j in self.model.jobs.values()
            if j.state == RUNNING and j.lease_expires is not None
        ]
        if expiries:
            self.now = max(self.now, min(expiries))
        error = f"{WORKER_LOST} {self.now}"
        back, died = self.model.recover(self.now, owner=None, error=error)
        got = self.storage.recover(self.now, error=error)
        assert sorted(got.waiting) == sorted(back) and sorted(got.dead) == sorted(died), (
            f"recover(now={self.now}) returned {got}, expected waiting={back} dead={died}"
        )

    @precondition(lambda self: PAUSE in self.capabilities)
    @rule(data=st.data(), paused=st.booleans())
    def pause(self, data: st.DataObject, paused: bool) -> None:
        worker = data.draw(st.sampled_from(self.workers), label="worker")
        self._pauser().pause(worker, paused)
        if paused:
            self.model.paused.add(worker)
        else:
            self.model.paused.discard(worker)

    @precondition(lambda self: PERSISTENT in self.capabilities)
    @rule()
    def close_and_reopen(self) -> None:
        self.storage = self.session.reopen()

    # -- observation ------------------------------------------------------------------

    @invariant()
    def observe(self) -> None:
        expected = [job.id for job in self.model.ordered()]
        everything = self.storage.list_jobs(limit=LIST_ALL)
        assert [r.id for r in everything] == expected, (
            f"list_jobs() returned {[r.id for r in everything]}, expected {expected}"
        )
        for record in everything:
            self._check(record)
        if PAUSE in self.capabilities:
            paused = self._pauser().paused() & set(self.workers)
            assert paused == self.model.paused, (
                f"paused() holds {sorted(paused)} of this example's types, expected "
                f"{sorted(self.model.paused)}"
            )

    def teardown(self) -> None:
        # Pauses outlive the emptying between examples: leave none behind.
        if PAUSE in self.capabilities and self.session.storage is not None:
            for worker in self.model.paused:
                self._pauser().pause(worker, False)


def run_limits_machine(factory: StorageFactory, settings: Settings) -> None:
    """Run the limits state machine against storages made by ``factory`` (raises on failure)."""
    session = StorageSession(factory)
    capped = Settings(
        settings,
        max_examples=min(settings.max_examples, MAX_EXAMPLES),
        stateful_step_count=min(settings.stateful_step_count, STEPS),
    )
    try:
        run_state_machine_as_test(
            lambda: LimitsMachine(session),  # type: ignore[arg-type]
            settings=capped,
        )
    finally:
        session.close()
