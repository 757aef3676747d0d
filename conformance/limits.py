"""Area: cluster-wide limits, partitions, rate windows and pause (``LIMITS``, ``PAUSE``).

``claim_limited`` is ``claim`` bounded per bucket (the worker type, or each
``partition`` of it): never more running jobs than ``concurrency``, never more
starts in ``(now - per, now]`` than ``rate``. A slot is a running job, so every
transition out of ``running`` frees it in the same step, and an expired lease
not yet recovered still holds it. A paused type is claimed by neither call. A
job enqueued with ``dead_error`` is stored dead at once and never claimed. The
race checks live in :mod:`conformance.limit_races`, the state machine in
:mod:`conformance.machine_limits`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conformance.base import (
    LONG,
    NOW,
    Check,
    RuleBroken,
    StorageFactory,
    claim,
    expect,
    got,
    ids,
    implements,
    job,
    opened,
    unique,
)
from conformance.control import CANCEL_API, SNOOZE_API
from conformance.limit_races import (
    LIMITS_API,
    kill_and_recover,
    race_limits_processes,
    race_limits_threads,
)
from conformance.schedule_races import SCHEDULES_API
from exqueue.storage import (
    CANCEL,
    COMPLETE_MANY,
    DEAD,
    LIMITS,
    MULTI_PROCESS,
    PARTITION_KEY_LIMIT,
    PAUSE,
    PERSISTENT,
    RUNNING,
    SCHEDULES,
    SNOOZE,
    UNIQUE,
    WAITING,
    CancelRequest,
    JobRecord,
    JobState,
    LimitedClaim,
    Limits,
    SnoozeRequest,
    Storage,
    SupportsCancel,
    SupportsCompleteMany,
    SupportsLimits,
    SupportsPause,
    SupportsSchedules,
    SupportsSnooze,
    Unique,
)

if TYPE_CHECKING:
    from hypothesis import settings as Settings

AREA = "limits and pause"
COMPLETE_MANY_API = "a backend declaring 'complete_many' implements complete_many"
PAUSE_API = "a backend declaring 'pause' implements pause and paused"

CONCURRENCY_RULE = (
    "claim_limited never lets a bucket's running jobs exceed limits.concurrency; a limited "
    "job waits with its attempt unspent"
)
SLOT_RULE = (
    "a slot is a running job: every transition out of running frees it in the same step, "
    "and an expired lease not yet recovered still holds it"
)
PARTITION_RULE = (
    "with partitioned limits each partition value (None too) is its own bucket; a job of a "
    "full partition is skipped and jobs of other partitions behind it are claimed"
)
RATE_RULE = (
    "claim_limited never lets the starts (claims) in (now - per, now] exceed limits.rate: a "
    "sliding window that counts claims, whatever became of their jobs"
)
PAUSE_RULE = "a paused worker type is claimed by neither claim nor claim_limited"


def lclaim(
    storage: Storage,
    worker: str,
    limits: Limits,
    limit: int = 10,
    *,
    now: float = NOW,
    token: str | None = None,
    owner: str = "node-a",
    lease_until: float | None = None,
) -> list[JobRecord]:
    """``claim_limited`` with the shared defaults of :func:`conformance.base.claim`."""
    request = LimitedClaim(
        worker=worker,
        limit=limit,
        now=now,
        owner=owner,
        token=token or unique("tok"),
        lease_until=now + LONG if lease_until is None else lease_until,
        limits=limits,
    )
    return implements(storage, SupportsLimits, LIMITS_API).claim_limited(request)


def _claimed(records: list[JobRecord], expected: list[str], rule: str, when: str) -> None:
    expect(ids(records) == expected, rule, f"{when}: claimed {ids(records)}, expected {expected}")


def check_limits_concurrency(factory: StorageFactory, settings: Settings) -> None:
    """LIMITS: at most `concurrency` running jobs of a worker; the rest wait, attempt unspent."""
    with opened(factory) as (_, storage):
        worker, other = unique("lim-conc"), unique("lim-other")
        two = Limits(concurrency=2)
        storage.enqueue([job(f"c{n}", worker, priority=-n if n == 4 else 0) for n in range(5)])
        storage.enqueue([job("o1", other)])
        # Claim order holds: c4 has the lowest priority number.
        _claimed(lclaim(storage, worker, two), ["c4", "c0"], CONCURRENCY_RULE, "10 asked, 2 free")
        _claimed(lclaim(storage, worker, two), [], CONCURRENCY_RULE, "both slots held")
        _claimed(lclaim(storage, worker, two, 0), [], CONCURRENCY_RULE, "limit 0")
        for job_id in ("c1", "c2", "c3"):
            record = got(storage, job_id)
            expect(
                record.state == WAITING and record.attempt == 0,
                CONCURRENCY_RULE,
                f"{job_id} is {record.state} with attempt {record.attempt}",
            )
        # Another worker type is not bounded by this one's slots.
        _claimed(lclaim(storage, other, two), ["o1"], CONCURRENCY_RULE, "another worker type")
        # A bigger bound (a redeploy) lets one more in; a claim asks for one at a time.
        _claimed(lclaim(storage, worker, Limits(concurrency=3), 1), ["c1"], CONCURRENCY_RULE, "3")
        _claimed(lclaim(storage, worker, Limits(concurrency=3)), [], CONCURRENCY_RULE, "3 held")
        # Limits() bounds nothing: claim_limited is then claim.
        _claimed(lclaim(storage, worker, Limits()), ["c2", "c3"], CONCURRENCY_RULE, "no bound")


def check_limits_slot_freed(factory: StorageFactory, settings: Settings) -> None:
    """LIMITS: complete, retry, bury, release, recover, cancel, snooze free the slot at once."""
    with opened(factory) as (_, storage):
        caps = frozenset(storage.capabilities)
        one = Limits(concurrency=1)
        transitions = ["complete", "retry", "bury", "release", "recover", "recover owner"]
        transitions += ["complete_many"] if COMPLETE_MANY in caps else []
        transitions += ["cancel"] if CANCEL in caps else []
        transitions += ["snooze"] if SNOOZE in caps else []
        for name in transitions:
            worker = unique("lim-slot")
            storage.enqueue([job(f"{worker}-a", worker), job(f"{worker}-b", worker)])
            token = unique("tok")
            first = lclaim(storage, worker, one, token=token, lease_until=NOW + 5, owner=worker)
            _claimed(first, [f"{worker}-a"], SLOT_RULE, name)
            # Still held after its lease expired, until recovered.
            late = NOW + 6
            _claimed(lclaim(storage, worker, one, now=late), [], SLOT_RULE, "lease expired")
            a = f"{worker}-a"
            if name == "complete":
                done = storage.complete(a, token)
            elif name == "complete_many":
                many = implements(storage, SupportsCompleteMany, COMPLETE_MANY_API)
                done = many.complete_many([(a, token)]) == [a]
            elif name == "retry":
                done = storage.schedule_retry(a, token, run_at=late + 100, error="x")
            elif name == "bury":
                done = storage.bury(a, token, error="x")
            elif name == "release":
                done = storage.release(a, token)
            elif name == "recover":
                done = storage.recover(late, error="lost").waiting == (a,)
            elif name == "recover owner":
                done = storage.recover(NOW + 1, owner=worker, error="lost").waiting == (a,)
            elif name == "cancel":
                # The cancel marks it; the holder then buries it.
                implements(storage, SupportsCancel, CANCEL_API).cancel(CancelRequest(a))
                done = storage.bury(a, token, error="cancelled")
            else:
                store = implements(storage, SupportsSnooze, SNOOZE_API)
                done = store.snooze(SnoozeRequest(a, token, late + 100, 5)) == "snoozed"
            expect(done, f"the holder's {name} applies", name)
            # A release keeps run_at, so the job is first in line again; a recovered
            # job's run_at is the recovery's now, behind b.
            again = a if name == "release" else f"{worker}-b"
            _claimed(lclaim(storage, worker, one, now=late), [again], SLOT_RULE, f"after {name}")


def check_limits_partitions(factory: StorageFactory, settings: Settings) -> None:
    """LIMITS: partitioned bounds apply per partition value; full partitions are skipped."""
    with opened(factory) as (_, storage):
        worker = unique("lim-part")
        per = Limits(concurrency=1, partitioned=True)
        # Partition names that a backend splitting keys on ':' or matching with LIKE
        # would confuse; None is a bucket of its own.
        parts = ["a:1", "a:1", "a%1", None, None, "ключ", "a_1", "a:1"]
        storage.enqueue([job(f"p{n}", worker, partition=p) for n, p in enumerate(parts)])
        for n, part in enumerate(parts):
            expect(
                got(storage, f"p{n}").partition == part,
                "a job's partition is stored exactly",
                f"p{n}: {got(storage, f'p{n}').partition!r}",
            )
        first = lclaim(storage, worker, per, 3)
        _claimed(first, ["p0", "p2", "p3"], PARTITION_RULE, "three asked")
        expect(
            [r.partition for r in first] == ["a:1", "a%1", None],
            "claim_limited returns each job's partition",
            [r.partition for r in first],
        )
        _claimed(lclaim(storage, worker, per), ["p5", "p6"], PARTITION_RULE, "the rest")
        _claimed(lclaim(storage, worker, per), [], PARTITION_RULE, "every partition full")
        storage.complete("p0", first[0].lease_token or "")
        _claimed(lclaim(storage, worker, per), ["p1"], PARTITION_RULE, "a:1 freed")
        # Unpartitioned limits ignore the partition: one bucket for the worker.
        other = unique("lim-unpart")
        storage.enqueue([job(f"u{n}", other, partition=f"x{n}") for n in range(3)])
        one = Limits(concurrency=1)
        _claimed(lclaim(storage, other, one), ["u0"], PARTITION_RULE, "unpartitioned")
        # Two per partition, asked one batch at a time.
        both = unique("lim-two")
        storage.enqueue([job(f"t{n}", both, partition="ab"[n % 2]) for n in range(6)])
        two = Limits(concurrency=2, partitioned=True)
        _claimed(lclaim(storage, both, two, 3), ["t0", "t1", "t2"], PARTITION_RULE, "2 each")
        _claimed(lclaim(storage, both, two, 3), ["t3"], PARTITION_RULE, "2 each, then full")


def check_limits_rate_window(factory: StorageFactory, settings: Settings) -> None:
    """LIMITS: at most `rate` claims in any (now - per, now]: a sliding window of starts."""
    with opened(factory) as (_, storage):
        worker = unique("lim-rate")
        rate = Limits(rate=2, per=10.0)
        storage.enqueue([job(f"r{n}", worker) for n in range(8)])
        t1 = lclaim(storage, worker, rate, now=NOW)
        _claimed(t1, ["r0", "r1"], RATE_RULE, "2 per 10 s at t")
        # Finished jobs still count: the window counts starts, not running jobs.
        for record in t1:
            storage.complete(record.id, record.lease_token or "")
        _claimed(lclaim(storage, worker, rate, now=NOW + 5), [], RATE_RULE, "t+5, 2 started")
        _claimed(lclaim(storage, worker, rate, now=NOW + 9.999), [], RATE_RULE, "t+9.999")
        # At t + 10 the starts at t have left (t+10-10, t+10].
        t2 = lclaim(storage, worker, rate, 1, now=NOW + 10, lease_until=NOW + 11)
        _claimed(t2, ["r2"], RATE_RULE, "t+10: the window slid past t")
        # A recovered job's start counts too: r2 waits again (run_at t+11) and only one
        # more start fits at t+15 (r3 goes first: its run_at is earlier).
        storage.recover(NOW + 11, error="lost")
        t3 = lclaim(storage, worker, rate, 5, now=NOW + 15)
        _claimed(t3, ["r3"], RATE_RULE, "t+15: one start (t+10) in the window, one more")
        # Sliding, not fixed: (t+14.5, t+24.5] holds the starts at t+15 and t+20; a
        # window fixed at multiples of 10 s would let one more in at t+24.5.
        _claimed(lclaim(storage, worker, rate, 5, now=NOW + 20), ["r4"], RATE_RULE, "t+20")
        _claimed(lclaim(storage, worker, rate, 5, now=NOW + 24.5), [], RATE_RULE, "t+24.5")
        _claimed(lclaim(storage, worker, rate, 5, now=NOW + 25), ["r5"], RATE_RULE, "t+25")
        # Per partition, with a concurrency bound too.
        parted = unique("lim-rate-part")
        both = Limits(concurrency=1, rate=2, per=60.0, partitioned=True)
        storage.enqueue([job(f"q{n}", parted, partition="ab"[n // 4]) for n in range(8)])
        seen: list[str] = []
        for step in range(6):
            for record in lclaim(storage, parted, both, 5, now=NOW + step):
                seen.append(record.id)
                storage.complete(record.id, record.lease_token or "")
        expect(
            seen == ["q0", "q4", "q1", "q5"],
            RATE_RULE + " (per partition, one running at a time)",
            f"claimed {seen} over six claims a second apart, expected q0 q4 q1 q5",
        )


def check_limits_pause(factory: StorageFactory, settings: Settings) -> None:
    """PAUSE: a paused type is not claimed; running jobs finish; resume; survives reopen."""
    with opened(factory) as (session, storage):
        store = implements(storage, SupportsPause, PAUSE_API)
        worker, other = unique("pause"), unique("pause-other")
        storage.enqueue([job(f"w{n}", worker) for n in range(3)] + [job("o1", other)])
        token = unique("tok")
        expect(ids(claim(storage, worker, 1, token=token)) == ["w0"], "claim before the pause")
        store.pause(worker, True)
        store.pause(worker, True)  # idempotent
        expect(worker in store.paused(), "paused() names a paused worker type", store.paused())
        expect(other not in store.paused(), "paused() names only paused types", store.paused())
        expect(claim(storage, worker, 5) == [], PAUSE_RULE, "claim took a paused type's job")
        if LIMITS in storage.capabilities:
            expect(lclaim(storage, worker, Limits(concurrency=5)) == [], PAUSE_RULE, "limited")
        expect(ids(claim(storage, other, 5)) == ["o1"], "other types are claimed", "paused too")
        expect(storage.complete("w0", token), "a running job of a paused type finishes")
        empty = unique("pause-empty")
        store.pause(empty, True)  # a type with no jobs yet
        expect(empty in store.paused(), "a type with no jobs may be paused", store.paused())
        if PERSISTENT in storage.capabilities:
            storage = session.reopen()
            store = implements(storage, SupportsPause, PAUSE_API)
            expect(worker in store.paused(), "a pause survives a reopen", store.paused())
            expect(claim(storage, worker, 5) == [], PAUSE_RULE, "after a reopen")
        store.pause(worker, False)
        store.pause(empty, False)
        expect(worker not in store.paused(), "resume removes the pause", store.paused())
        expect(ids(claim(storage, worker, 5)) == ["w1", "w2"], "a resumed type is claimed")


def check_limits_pause_apart(factory: StorageFactory, settings: Settings) -> None:
    """PAUSE with SCHEDULES: a worker type's pause and a schedule's pause never mix."""
    rule = (
        "pause(worker) pauses only that worker type and pause_schedule(name) only that "
        "schedule, whichever of the two a storage object runs first"
    )
    for schedule_first in (False, True):
        # A fresh storage object for each order: a backend may cache per object what
        # each call runs (RedisStorage's scripts once shared one name, 'PAUSE').
        with opened(factory) as (_, storage):
            store = implements(storage, SupportsPause, PAUSE_API)
            sched = implements(storage, SupportsSchedules, SCHEDULES_API)
            worker, name = unique("apart-type"), unique("apart-schedule")
            if schedule_first:
                sched.pause_schedule(name, True)
            store.pause(worker, True)
            if not schedule_first:
                sched.pause_schedule(name, True)
            order = "schedule first" if schedule_first else "worker type first"
            types = store.paused() & {worker, name}
            expect(types == {worker}, rule, f"{order}: paused worker types {sorted(types)}")
            states = {s.name: s.paused for s in sched.schedules() if s.name in (worker, name)}
            expect(states == {name: True}, rule, f"{order}: schedules {states}")


def check_limits_dead_error(factory: StorageFactory, settings: Settings) -> None:
    """LIMITS: a job enqueued with dead_error is stored dead with that error, never claimed."""
    with opened(factory) as (_, storage):
        worker = unique("dead-err")
        reason = "partition function raised: KeyError('customer') ✗\nline 2"
        key = unique("key")
        extra: dict[str, Any] = {"unique": Unique(key)} if UNIQUE in storage.capabilities else {}
        answer = storage.enqueue([job("d1", worker, dead_error=reason, **extra), job("w1", worker)])
        expect(answer == ["d1", "w1"], "enqueue returns a dead_error job's own id", answer)
        record = got(storage, "d1")
        expect(
            record.state == DEAD
            and record.attempt == 0
            and list(record.errors) == [reason]
            and record.error_count == 1
            and record.lease_token is None,
            "a dead_error job is stored dead, attempt 0, with exactly that one error",
            record,
        )
        dead = storage.list_jobs(state=DEAD, worker=worker)
        expect(ids(dead) == ["d1"], "list_jobs(state='dead') shows it", ids(dead))
        expect(ids(claim(storage, worker, 5, now=NOW + 1)) == ["w1"], "claim skips it")
        limited = lclaim(storage, worker, Limits(concurrency=5), now=NOW + 1)
        expect(limited == [], "claim_limited skips it", ids(limited))
        expect(
            storage.counts(NOW + 1)[worker].dead == 1, "counts show it dead", storage.counts(NOW)
        )
        if extra:
            # It holds no unique key: a job with the key and every state named is stored.
            states: frozenset[JobState] = frozenset({WAITING, RUNNING, DEAD})
            again = storage.enqueue([job("k2", worker, unique=Unique(key, states))])
            expect(again == ["k2"], "a dead_error job holds no unique key", again)


def check_limits_partition_stored(factory: StorageFactory, settings: Settings) -> None:
    """LIMITS: partition round-trips exactly (255 UTF-8 bytes), kept by retry and requeue."""
    with opened(factory) as (session, storage):
        worker = unique("part-keep")
        head = unique("p") + "·"
        room = PARTITION_KEY_LIMIT - len(head.encode())
        long_part = head + "ж" * (room // 2) + "x" * (room % 2)
        assert len(long_part.encode()) == PARTITION_KEY_LIMIT
        parts = {"k-long": long_part, "k-none": None, "k-empty": "", "k-pct": "%_:"}
        storage.enqueue([job(job_id, worker, partition=p) for job_id, p in parts.items()])
        listed = {r.id: r.partition for r in storage.list_jobs(worker=worker)}
        expect(listed == parts, "list_jobs returns each job's partition exactly", listed)
        token = unique("tok")
        taken = claim(storage, worker, 4, token=token)
        expect(
            {r.id: r.partition for r in taken} == parts,
            "claim returns each job's partition",
            [r.partition for r in taken],
        )
        storage.schedule_retry("k-long", token, run_at=NOW, error="x")
        storage.bury("k-pct", token, error="x")
        expect(storage.requeue("k-pct", "k-pct-2", now=NOW) == "requeued", "requeue")
        if PERSISTENT in storage.capabilities:
            storage = session.reopen()
        for job_id, part in (("k-long", long_part), ("k-pct-2", "%_:"), ("k-none", None)):
            found = got(storage, job_id).partition
            expect(found == part, "retry, requeue and reopen keep the partition", found)


def check_limits_state_machine(factory: StorageFactory, settings: Settings) -> None:
    """LIMITS: random limited claims, outcomes, clock moves and pauses agree with the model."""
    from conformance.machine_limits import run_limits_machine

    try:
        run_limits_machine(factory, settings)
    except AssertionError as exc:
        raise RuleBroken(
            "rule broken: every limited claim, result and record matches the reference model "
            f"(conformance/model.py) after each step -- {exc}"
        ) from exc


LIMIT_RACE_RULE = (
    "the bound check and the claim are one atomic step: racing claimers never run more jobs "
    "of a limited type (or partition) at one instant than its limit"
)


def check_limits_thread_race(factory: StorageFactory, settings: Settings) -> None:
    """LIMITS: 8 threads claiming limited types at once never exceed a limit at any instant."""
    with opened(factory) as (_, storage):
        try:
            figures = race_limits_threads(storage)
        except AssertionError as exc:
            raise RuleBroken(f"rule broken: {LIMIT_RACE_RULE} (threads) -- {exc}") from exc
        print(figures.line("limits race, 8 threads"))


def check_limits_process_race(factory: StorageFactory, settings: Settings) -> None:
    """LIMITS, MULTI_PROCESS: 4 processes claiming limited types never exceed a limit."""
    with opened(factory):
        pass  # empties the store before the children start
    try:
        figures = race_limits_processes(factory)
    except AssertionError as exc:
        raise RuleBroken(f"rule broken: {LIMIT_RACE_RULE} (processes) -- {exc}") from exc
    print(figures.line("limits race, 4 processes"))


def check_limits_kill_recovery(factory: StorageFactory, settings: Settings) -> None:
    """LIMITS, MULTI_PROCESS: a node killed with SIGKILL leaks no slot once recovered."""
    with opened(factory):
        pass  # empties the store before the child starts
    try:
        kill_and_recover(factory)
    except AssertionError as exc:
        raise RuleBroken(f"rule broken: {SLOT_RULE} (kill -9) -- {exc}") from exc


CHECKS = [
    Check("limits_concurrency", LIMITS, check_limits_concurrency, AREA),
    Check("limits_slot_freed", LIMITS, check_limits_slot_freed, AREA),
    Check("limits_partitions", LIMITS, check_limits_partitions, AREA),
    Check("limits_rate_window", LIMITS, check_limits_rate_window, AREA),
    Check("limits_pause", PAUSE, check_limits_pause, AREA),
    Check("limits_pause_apart", (PAUSE, SCHEDULES), check_limits_pause_apart, AREA),
    Check("limits_dead_error", LIMITS, check_limits_dead_error, AREA),
    Check("limits_partition_stored", LIMITS, check_limits_partition_stored, AREA),
    Check("limits_state_machine", LIMITS, check_limits_state_machine, AREA),
    Check("limits_thread_race", LIMITS, check_limits_thread_race, AREA),
    Check("limits_process_race", (LIMITS, MULTI_PROCESS), check_limits_process_race, AREA),
    Check("limits_kill_recovery", (LIMITS, MULTI_PROCESS), check_limits_kill_recovery, AREA),
]
