"""SPEC §3 on every backend: per-type concurrency limits and serial worker types."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import exqueue
from exqueue.storage import JobRecord
from tests.support.clock import FakeClock


def test_concurrency_five_reaches_five_and_never_six(storage: exqueue.Storage) -> None:
    queue = exqueue.Queue(storage, poll_interval=0.02)
    total = 15
    lock = threading.Condition()
    state = {"active": 0, "max": 0, "started": 0}

    @queue.worker(name="limited", concurrency=5)
    def limited() -> None:
        with lock:
            state["active"] += 1
            state["started"] += 1
            state["max"] = max(state["max"], state["active"])
            lock.notify_all()
            # Hold the slot until five run together (or nobody else can come).
            lock.wait_for(lambda: state["active"] >= 5 or state["started"] == total, timeout=10)
        time.sleep(0.01)
        with lock:
            state["active"] -= 1
            lock.notify_all()

    queue.enqueue_many([limited.call() for _ in range(total)])
    assert queue.drain(timeout=60) == total
    assert state["max"] == 5


def test_serial_type_runs_in_order_and_waits_for_a_failing_head(
    storage: exqueue.Storage,
) -> None:
    clock = FakeClock()
    queue = exqueue.Queue(storage, clock=clock)
    order: list[str] = []
    failures = {"A": 2}

    @queue.worker(
        name="serial", serial=True, concurrency=5, max_retries=3, backoff=exqueue.Fixed(10)
    )
    def step(name: str) -> None:
        order.append(name)
        if failures.get(name, 0) > 0:
            failures[name] -= 1
            raise RuntimeError(f"{name} fails")

    for name in "ABC":
        step.enqueue(name)
    assert queue.drain() == 1
    clock.advance(10)
    assert queue.drain() == 1
    assert order == ["A", "A"], "B and C must not pass the failing head"
    clock.advance(10)
    assert queue.drain() == 3
    assert order == ["A", "A", "A", "B", "C"]


def test_dead_serial_head_blocks_its_type_until_retried_but_not_other_types(
    storage: exqueue.Storage,
) -> None:
    clock = FakeClock()
    queue = exqueue.Queue(storage, clock=clock)
    order: list[str] = []
    broken = {"A"}

    @queue.worker(name="serial", serial=True, max_retries=0)
    def step(name: str) -> None:
        order.append(name)
        if name in broken:
            raise RuntimeError("broken")

    other = queue.worker(name="other")(lambda: order.append("other"))
    head = step.enqueue("A")
    step.enqueue("B")
    assert queue.drain() == 1
    other.enqueue()
    clock.advance(3600)
    assert queue.drain() == 1
    assert order == ["A", "other"], "B is blocked by the dead head; other types are not"
    broken.clear()
    queue.retry(head)
    assert queue.drain() == 2
    assert order == ["A", "other", "A", "B"]


def test_deleting_a_dead_serial_head_unblocks_the_type(storage: exqueue.Storage) -> None:
    queue = exqueue.Queue(storage, clock=FakeClock())
    order: list[str] = []

    @queue.worker(name="serial", serial=True, max_retries=0)
    def step(name: str) -> None:
        order.append(name)
        if name == "A":
            raise RuntimeError("broken")

    head = step.enqueue("A")
    step.enqueue("B")
    queue.drain()
    assert queue.delete(head)
    assert queue.drain() == 1
    assert order == ["A", "B"]


def test_serial_type_is_one_at_a_time_across_nodes(storage: exqueue.Storage) -> None:
    nodes = [exqueue.Queue(storage, node=f"node-{i}", poll_interval=0.02) for i in range(2)]
    lock = threading.Lock()
    log: list[tuple[str, int]] = []
    active = {"now": 0, "max": 0}
    total = 12
    done = threading.Event()

    def make(queue: exqueue.Queue) -> None:
        @queue.worker(name="serial", serial=True)
        def step(i: int) -> None:
            with lock:
                active["now"] += 1
                active["max"] = max(active["max"], active["now"])
                log.append((queue.node, i))
            time.sleep(0.005)
            with lock:
                active["now"] -= 1
                if len(log) == total:
                    done.set()

    for queue in nodes:
        make(queue)
    nodes[0].enqueue_many([exqueue.Call("serial", (i,)) for i in range(total)])
    for queue in nodes:
        queue.start()
    try:
        assert done.wait(60)
    finally:
        for queue in nodes:
            queue.stop(timeout=5)
    assert [i for _, i in log] == list(range(total))
    assert active["max"] == 1


def test_claims_never_exceed_free_slots_without_prefetch() -> None:
    """Job threads claim for their lane when it runs dry, as the dispatcher does;
    one claim at a time per lane, so a node never holds more than it can run."""
    from exqueue_memory import MemoryStorage

    class SlowClaims(MemoryStorage):
        # A claim that takes a moment, as over a network: two claimers deciding
        # how many to take at the same time would both take the free slots.
        def claim(self, *args: Any, **kwargs: Any) -> list[JobRecord]:
            time.sleep(0.002)
            return super().claim(*args, **kwargs)

    storage = SlowClaims()
    queue = exqueue.Queue(storage, poll_interval=0.02)
    held: list[int] = []

    @queue.worker(name="short", concurrency=4)
    def short(n: int) -> None:
        # Claimed jobs are "running" in the store from their claim on; the memory
        # store records successes at once, so the count is what this node holds.
        held.append(storage.counts(time.time())["short"].running)
        if n % 3 == 0:
            time.sleep(0.001)

    queue.enqueue_many([short.call(n) for n in range(1500)])
    assert queue.drain(timeout=60) == 1500
    assert len(held) == 1500
    assert max(held) <= 4


def test_a_lane_of_short_jobs_leaves_no_job_waiting_behind_a_slow_one(
    storage: exqueue.Storage,
) -> None:
    # Hundreds of no-op jobs make the lane a short-job lane (one thread woken per
    # claimed batch); the slow job then waits for every job enqueued after it, so it
    # ends in time only if other threads take them while it runs.
    queue = exqueue.Queue(storage, poll_interval=0.02)
    after = set(range(1000, 1012))
    ran_after: set[int] = set()
    all_after = threading.Event()
    slow_saw: list[bool] = []

    @queue.worker(name="quick", concurrency=4)
    def quick(n: int) -> None:
        if n == -1:
            slow_saw.append(all_after.wait(timeout=5))
        elif n in after:
            ran_after.add(n)
            if ran_after == after:
                all_after.set()

    calls = [quick.call(n) for n in range(300)]
    calls += [quick.call(-1)] + [quick.call(n) for n in sorted(after)]
    queue.enqueue_many(calls)
    assert queue.drain(timeout=60) == len(calls)
    assert slow_saw == [True]


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_lane_of_short_jobs_that_went_idle_runs_the_jobs_that_come_later(
    storage: exqueue.Storage, concurrency: int
) -> None:
    # Idle after hundreds of no-op jobs, the lane's threads wait; the next jobs must
    # reach one of them, whichever condition it waits on.
    queue = exqueue.Queue(storage, poll_interval=0.02)
    ran: list[int] = []
    counted = threading.Condition()

    @queue.worker(name="quick", concurrency=concurrency)
    def quick(n: int) -> None:
        with counted:
            ran.append(n)
            counted.notify_all()

    def ran_all(total: int) -> bool:
        with counted:
            return counted.wait_for(lambda: len(ran) >= total, timeout=20)

    queue.enqueue_many([quick.call(n) for n in range(300)])
    queue.start()
    try:
        assert ran_all(300)
        time.sleep(0.2)  # every thread of the lane now waits for work
        queue.enqueue_many([quick.call(n) for n in range(300, 320)])
        assert ran_all(320), f"{len(ran)} of 320 ran"
    finally:
        queue.stop()


def test_successes_a_short_lane_keeps_behind_a_long_job_keep_their_leases(
    storage: exqueue.Storage,
) -> None:
    # A short-job lane's thread writes its batch's successes with the lane's next
    # claim, after the batch. A job longer than the lease in that batch leaves the
    # successes before it unwritten for longer than their lease: the heartbeat must
    # extend them, or recovery hands them back and they run twice.
    queue = exqueue.Queue(storage, poll_interval=0.02, lease=1.0)
    runs: dict[int, int] = {}
    lock = threading.Lock()

    @queue.worker(name="quick", concurrency=4)
    def quick(n: int) -> None:
        with lock:
            runs[n] = runs.get(n, 0) + 1
        if n < 0:
            time.sleep(2.5)

    # Where a batch begins is up to the claims: a few quick jobs before each long one
    # make sure that some thread runs quick ones and then a long one in one batch.
    calls = [quick.call(n) for n in range(400)]
    for long_job in range(-1, -5, -1):
        calls += [quick.call(n) for n in range(1000 + 10 * long_job, 1003 + 10 * long_job)]
        calls.append(quick.call(long_job))
    queue.enqueue_many(calls)
    assert queue.drain(timeout=60) == len(calls)
    assert len(runs) == len(calls)
    assert [n for n, count in runs.items() if count != 1] == []
    assert storage.list_jobs(limit=10) == []
