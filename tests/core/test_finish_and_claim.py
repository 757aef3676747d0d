"""The thread runtime on a FINISH_AND_CLAIM storage: a job thread writes its success
and claims its lane's next job in one call (issue 19).

Counted on a wrapper storage (calls, not timing): a drain at concurrency 1 makes one
``finish_and_claim`` per job and almost no plain claims, and the claims still never
exceed the free slots (``prefetch=0``), a serial type still runs in order, a paused
type is not claimed, a limited type never uses it, a success whose lease was taken
is not recorded, and a failed call neither loses the success nor stops the lane.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import exqueue
from exqueue.runtime.acks import PARALLEL_WRITERS
from exqueue.storage import (
    FINISH_IN_PARALLEL,
    RUNNING,
    FinishAndClaim,
    Finished,
    JobRecord,
    Storage,
)
from exqueue_memory import MemoryStorage
from tests.support.backends import BackendHandle, backend_factory


class Counting:
    """Counts a storage's claims and successes (a mixin over a storage class)."""

    def _init_counts(self) -> None:
        self.calls: dict[str, int] = {"claim": 0, "complete": 0, "finish": 0, "limited": 0}
        self.requests: list[FinishAndClaim] = []
        self.results: list[Finished] = []
        self.fail_next = 0  # finish_and_claim calls to fail (a storage outage)
        self.lock = threading.Lock()
        self.inner = threading.local()  # within finish_and_claim: its parts are not counted

    def _count(self, name: str) -> None:
        if not getattr(self.inner, "on", False):
            with self.lock:
                self.calls[name] += 1

    def claim(self, *args: Any, **kwargs: Any) -> list[JobRecord]:
        self._count("claim")
        return super().claim(*args, **kwargs)  # type: ignore[misc,no-any-return]

    def complete(self, *args: Any, **kwargs: Any) -> bool:
        self._count("complete")
        return super().complete(*args, **kwargs)  # type: ignore[misc,no-any-return]

    def complete_many(self, *args: Any, **kwargs: Any) -> list[str]:
        self._count("complete")
        return super().complete_many(*args, **kwargs)  # type: ignore[misc,no-any-return]

    def claim_limited(self, *args: Any, **kwargs: Any) -> list[JobRecord]:
        self._count("limited")
        return super().claim_limited(*args, **kwargs)  # type: ignore[misc,no-any-return]

    def finish_and_claim(self, request: FinishAndClaim) -> Finished:
        with self.lock:
            self.calls["finish"] += 1
            self.requests.append(request)
            failing = self.fail_next > 0
            self.fail_next -= failing
        if failing:
            raise ConnectionError("the store went away")
        self.inner.on = True  # MemoryStorage's runs complete_many and claim
        try:
            result: Finished = super().finish_and_claim(request)  # type: ignore[misc]
        finally:
            self.inner.on = False
        with self.lock:
            self.results.append(result)
        return result


class CountingMemory(Counting, MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self._init_counts()


class Parallel(CountingMemory):
    """A durable store whose finish-and-claim calls run side by side (PostgreSQL's)."""

    capabilities = CountingMemory.capabilities | {"persistent", FINISH_IN_PARALLEL}

    def __init__(self) -> None:
        super().__init__()
        self.overlap = [0, 0]  # calls in flight, the most seen
        self.beside = 0  # the most calls in flight as a batch of successes began
        self.round_trip = 0.0005  # of a call with one success (a job thread's own)

    def finish_and_claim(self, request: FinishAndClaim) -> Finished:
        with self._in_flight(len(request.done)):
            return super().finish_and_claim(request)

    def complete_many(self, *args: Any, **kwargs: Any) -> list[str]:
        if getattr(self.inner, "on", False):  # a part of finish_and_claim
            return super().complete_many(*args, **kwargs)
        with self._in_flight(len(args[0])):
            return super().complete_many(*args, **kwargs)

    @contextlib.contextmanager
    def _in_flight(self, successes: int) -> Iterator[None]:
        with self.lock:
            self.overlap[0] += 1
            self.overlap[1] = max(self.overlap)
            if successes > 1:
                self.beside = max(self.beside, self.overlap[0])
        try:
            # A round trip, during which others may call.
            time.sleep(self.round_trip if successes == 1 else 0.0005)
            yield
        finally:
            with self.lock:
                self.overlap[0] -= 1


def _counting_redis(tmp_path: Path) -> Storage:
    factory = backend_factory("redis", tmp_path)  # skips when Redis is not running
    from exqueue_redis import RedisStorage

    class CountingRedis(Counting, RedisStorage):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._init_counts()

    return CountingRedis(*factory.args, **factory.keywords)  # type: ignore[attr-defined]


@pytest.fixture(params=["memory", "redis"])
def counted(request: Any, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        storage: Any = CountingMemory()
        yield storage
        storage.close()
        return
    storage = _counting_redis(tmp_path)
    yield storage
    handle = BackendHandle("redis", backend_factory("redis", tmp_path))
    storage.destroy()
    storage.close()
    handle.close_all()


def _plain_claims(storage: Any) -> int:
    return int(storage.calls["claim"])


def test_a_drain_at_concurrency_one_claims_with_each_success(counted: Any) -> None:
    queue = exqueue.Queue(counted, poll_interval=0.05)
    ran: list[int] = []
    running: list[int] = []

    @queue.worker(name="one", concurrency=1)
    def one(n: int) -> None:
        ran.append(n)
        running.append(counted.counts(time.time())["one"].running)

    total = 40
    queue.enqueue_many([one.call(n) for n in range(total)])
    assert queue.drain(timeout=60) == total
    assert ran == list(range(total))
    # One call per job writes its success and claims the next; the dispatcher
    # claims the first job and finds the type empty after the last.
    assert counted.calls["finish"] == total
    assert counted.calls["complete"] == 0
    assert _plain_claims(counted) <= 3
    # prefetch=0: each call claims for the one slot its success frees, no more.
    assert {r.limit for r in counted.requests} == {1}
    assert max(running) == 1
    assert [len(r.claimed) for r in counted.results] == [1] * (total - 1) + [0]
    assert counted.counts(time.time()) == {}


def test_claims_with_successes_never_exceed_free_slots() -> None:
    storage = CountingMemory()
    queue = exqueue.Queue(storage, poll_interval=0.02)
    held: list[int] = []

    @queue.worker(name="four", concurrency=4)
    def four(n: int) -> None:
        held.append(storage.counts(time.time())["four"].running)
        if n % 3 == 0:
            time.sleep(0.001)

    queue.enqueue_many([four.call(n) for n in range(600)])
    assert queue.drain(timeout=60) == 600
    assert len(held) == 600 and max(held) <= 4
    assert storage.calls["finish"] > 0
    assert max(r.limit for r in storage.requests) <= 4


def test_the_ackers_claims_with_its_batches_never_exceed_free_slots() -> None:
    class Durable(CountingMemory):
        """Batches successes like a durable store: the acker writes them, with claims."""

        capabilities = CountingMemory.capabilities | {"persistent"}

    storage = Durable()
    queue = exqueue.Queue(storage, poll_interval=0.02)
    lock = threading.Lock()
    running = [0]
    most: list[int] = []

    @queue.worker(name="four", concurrency=4)
    def four(n: int) -> None:
        # Counted here, not in the store: a job whose success is queued still holds
        # its lease there while its slot already runs the next job.
        with lock:
            running[0] += 1
            most.append(running[0])
        if n % 3 == 0:
            time.sleep(0.001)
        with lock:
            running[0] -= 1

    queue.enqueue_many([four.call(n) for n in range(600)])
    assert queue.drain(timeout=60) == 600
    assert len(most) == 600 and max(most) <= 4
    assert max(r.limit for r in storage.requests) <= 4
    assert not queue.jobs(), "every success was written"


def test_parallel_finishes_claim_side_by_side_and_never_exceed_free_slots() -> None:
    storage = Parallel()
    queue = exqueue.Queue(storage, poll_interval=0.02)
    held: list[int] = []

    @queue.worker(name="four", concurrency=4)
    def four(n: int) -> None:
        # Each thread writes its success before it takes its next job: the store
        # never holds more running jobs than the lane has threads.
        held.append(storage.counts(time.time())["four"].running)
        time.sleep(0.0002)  # long enough that the lane is not run as short jobs

    queue.enqueue_many([four.call(n) for n in range(400)])
    assert queue.drain(timeout=60) == 400
    assert len(held) == 400 and max(held) <= 4
    assert max(r.limit for r in storage.requests) <= 4
    # Nearly every success went with a claim, from its own thread, several at once.
    assert storage.calls["finish"] >= 300
    assert storage.overlap[1] >= 2
    assert not queue.jobs(), "every success was written"


def test_parallel_finishes_are_bounded_and_the_rest_go_to_the_acker() -> None:
    # 64 statements in flight at once made PostgreSQL slower at 64 threads than at 4.
    storage = Parallel()
    # The job threads' own writes outlast many jobs: successes queue behind them.
    storage.round_trip = 0.01
    queue = exqueue.Queue(storage, poll_interval=0.02)
    ran: list[int] = []

    @queue.worker(name="many", concurrency=16)
    def many(n: int) -> None:
        time.sleep(0.001)  # not short jobs: each thread would write its own
        ran.append(n)

    queue.enqueue_many([many.call(n) for n in range(800)])
    assert queue.drain(timeout=60) == 800
    assert sorted(ran) == list(range(800))
    # The job threads' own writes, and the acker's batches beside them: those
    # hold the successes that found the writers busy.
    assert 2 <= storage.overlap[1] <= PARALLEL_WRITERS + 1
    assert storage.beside >= 2
    assert max(r.limit for r in storage.requests) <= 16
    assert not queue.jobs(), "every success was written"


def test_a_serial_type_hands_its_next_head_to_the_finishing_thread(counted: Any) -> None:
    queue = exqueue.Queue(counted, poll_interval=0.05)
    ran: list[int] = []

    @queue.worker(name="steps", serial=True)
    def steps(n: int) -> None:
        ran.append(n)

    queue.enqueue_many([steps.call(n) for n in range(15)])
    assert queue.drain(timeout=60) == 15
    assert ran == list(range(15))
    assert all(r.serial for r in counted.requests)
    # Each success made the next head claimable in the same call.
    assert [len(r.claimed) for r in counted.results] == [1] * 14 + [0]
    assert _plain_claims(counted) <= 3


def test_a_paused_type_is_not_claimed_with_a_success() -> None:
    storage = CountingMemory()
    queue = exqueue.Queue(storage, poll_interval=0.02)
    ran: list[int] = []

    @queue.worker(name="pausing", concurrency=1)
    def pausing(n: int) -> None:
        ran.append(n)
        if n == 2:
            storage.pause("pausing", True)

    queue.enqueue_many([pausing.call(n) for n in range(6)])
    queue.drain(timeout=30)
    assert ran == [0, 1, 2]
    assert storage.results[-1].completed and storage.results[-1].claimed == []
    storage.pause("pausing", False)
    queue.drain(timeout=30)
    assert ran == list(range(6))


def test_a_limited_type_never_claims_with_its_successes() -> None:
    storage = CountingMemory()
    queue = exqueue.Queue(storage, poll_interval=0.02)
    ran: list[int] = []

    @queue.worker(name="limited", concurrency=1, global_limit=1)
    def limited(n: int) -> None:
        ran.append(n)

    queue.enqueue_many([limited.call(n) for n in range(10)])
    assert queue.drain(timeout=30) == 10
    assert sorted(ran) == list(range(10))
    assert storage.calls["finish"] == 0 and storage.calls["limited"] > 0


def test_a_success_whose_lease_was_taken_is_not_recorded(
    counted: Any, caplog: pytest.LogCaptureFixture
) -> None:
    queue = exqueue.Queue(counted, poll_interval=0.05)
    ran: list[int] = []

    @queue.worker(name="fenced", concurrency=1)
    def fenced(n: int) -> None:
        ran.append(n)
        if n == 1 and ran.count(1) == 1:
            # Recovery hands the running job back (as for a node presumed dead).
            (mine,) = counted.list_jobs(state=RUNNING, worker="fenced")
            counted.recover(time.time(), owner=mine.lease_owner, error="taken")

    queue.enqueue_many([fenced.call(n) for n in range(3)])
    with caplog.at_level(logging.WARNING, logger="exqueue"):
        assert queue.drain(timeout=60) == 4
    assert sorted(ran) == [0, 1, 1, 2]
    lost = [r for r in counted.results if not r.completed]
    # The first run of job 1 completed nothing; its lease-holder is the second run.
    assert len(lost) == 1
    warned = [r.message for r in caplog.records if "lost before" in r.message]
    assert len(warned) == 1 and "success" in warned[0]
    assert counted.counts(time.time()) == {}


def test_a_failed_call_keeps_the_success_and_the_lane_goes_on(
    counted: Any, caplog: pytest.LogCaptureFixture
) -> None:
    queue = exqueue.Queue(counted, poll_interval=0.05)
    ran: list[int] = []

    @queue.worker(name="outage", concurrency=1)
    def outage(n: int) -> None:
        ran.append(n)
        if n == 3:
            counted.fail_next = 1

    queue.enqueue_many([outage.call(n) for n in range(8)])
    with caplog.at_level(logging.WARNING, logger="exqueue"):
        assert queue.drain(timeout=60) == 8
    # Job 3's success was written the usual way: it did not run again.
    assert ran == list(range(8))
    assert counted.calls["complete"] == 1
    assert any("claiming jobs of outage failed" in r.message for r in caplog.records)
    assert counted.counts(time.time()) == {}


def test_with_many_threads_the_ackers_writes_carry_the_claims() -> None:
    """The dispatcher leaves a lane whose successes the acker is about to write to that
    write's claim, and the write claims even while claimed jobs wait in the buffer:
    one call per batch, not a plain claim beside a plain write."""

    class Remote(CountingMemory):
        """A durable store a round trip away: each call takes a millisecond."""

        capabilities = CountingMemory.capabilities | {"persistent"}

        def claim(self, *args: Any, **kwargs: Any) -> list[JobRecord]:
            time.sleep(0.001)
            return super().claim(*args, **kwargs)

        def complete_many(self, *args: Any, **kwargs: Any) -> list[str]:
            if not getattr(self.inner, "on", False):
                time.sleep(0.001)
            return super().complete_many(*args, **kwargs)

        def finish_and_claim(self, request: FinishAndClaim) -> Finished:
            time.sleep(0.001)
            return super().finish_and_claim(request)

    storage = Remote()
    queue = exqueue.Queue(storage, poll_interval=0.02)

    @queue.worker(name="many", concurrency=16)
    def many(n: int) -> None:
        time.sleep(0.005)

    total = 480
    queue.enqueue_many([many.call(n) for n in range(total)])
    assert queue.drain(timeout=60) == total
    calls = storage.calls
    assert calls["finish"] > 0
    # The dispatcher claims the first jobs, and after the acker's last writes; the
    # rest go with the successes.
    assert calls["claim"] + calls["complete"] <= calls["finish"] // 4, calls
    assert max(r.limit for r in storage.requests) <= 16
