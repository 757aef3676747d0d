"""The acker's hand-offs (issue 19): who writes a success, and when the dispatcher is woken.

A job thread that finds the acker idle writes its own success (no thread
switch), successes arriving meanwhile still go together in one batch, a stop
never counts a success being written by its job thread as unwritten-and-free to
release, and the acker wakes the dispatcher after its last queued batch only
(or not at all when that batch went with a claim that came back full and no
lane wants jobs).
Driven with a fake recorder whose writes block on events, so no test times anything.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, cast

import pytest

import exqueue
from exqueue.runtime import acks
from exqueue.runtime.acks import Acker
from exqueue_memory import MemoryStorage


class GatedRecorder:
    """Records each batch and the thread that wrote it; each write waits for a permit."""

    def __init__(self) -> None:
        self.wake = threading.Event()
        self.permits = threading.Semaphore(0)
        self.entered = threading.Semaphore(0)
        self.batches: list[tuple[str, list[tuple[str, str]]]] = []
        #: Per batch, the ids its write with a claim completed (None: a plain write).
        self.written_as: list[list[str] | None] = []

    def successes(
        self,
        storage: Any,
        batch: Sequence[tuple[str, str]],
        written_as: list[str] | None = None,
    ) -> None:
        self.entered.release()
        assert self.permits.acquire(timeout=10.0), "a write was never let through"
        self.batches.append((threading.current_thread().name, list(batch)))
        self.written_as.append(written_as)

    def let_through(self, writes: int = 1) -> None:
        self.permits.release(writes)


def make_acker(recorder: GatedRecorder, starved: bool = False, bound: int = 8) -> Acker:
    return Acker(cast(Any, recorder), cast(Any, None), bound=bound, starved=lambda: starved)


def gathering_acker(
    recorder: GatedRecorder, monkeypatch: pytest.MonkeyPatch, saturated: bool, wait: float
) -> Acker:
    """An acker of 16 job threads (a batch of 2 is worth waiting for) on a process
    whose CPU is (or is not) saturated, waiting up to ``wait`` seconds."""
    monkeypatch.setattr(acks, "GATHER_WAIT", wait)
    acker = make_acker(recorder, bound=16)
    acker.saturated = lambda: saturated
    return acker


def test_a_cpu_bound_process_gathers_successes_into_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = GatedRecorder()
    acker = gathering_acker(recorder, monkeypatch, saturated=True, wait=30.0)
    try:
        assert acker.submit("a", "t") is True
        assert not recorder.entered.acquire(timeout=0.2), "one success is not a batch yet"
        assert acker.submit("b", "t") is True
        assert recorder.entered.acquire(timeout=10.0), "two are: written at once"
        recorder.let_through()
        assert acker.close(timeout=10.0) == set()
    finally:
        recorder.let_through(10)
    assert recorder.batches == [("exqueue-acker", [("a", "t"), ("b", "t")])]


def test_gathering_waits_a_bounded_time_and_never_when_the_cpu_has_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for saturated, wait in ((True, 0.05), (False, 30.0)):
        recorder = GatedRecorder()
        acker = gathering_acker(recorder, monkeypatch, saturated, wait)
        try:
            assert acker.submit("a", "t") is True
            assert recorder.entered.acquire(timeout=10.0), (saturated, wait)
            recorder.let_through()
            assert acker.close(timeout=10.0) == set()
        finally:
            recorder.let_through(10)
        assert recorder.batches == [("exqueue-acker", [("a", "t")])]


def test_a_stop_writes_a_gathering_batch_without_waiting_out_the_gather(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = GatedRecorder()
    acker = gathering_acker(recorder, monkeypatch, saturated=True, wait=30.0)
    recorder.let_through(10)
    assert acker.submit("a", "t") is True
    assert not recorder.entered.acquire(timeout=0.1)
    assert acker.close(timeout=10.0) == set(), "the stop ended the wait and wrote it"
    assert recorder.batches == [("exqueue-acker", [("a", "t")])]


def test_an_idle_acker_leaves_the_write_to_the_job_thread_and_batches_the_rest() -> None:
    recorder = GatedRecorder()
    acker = make_acker(recorder)
    try:
        assert acker.submit("a", "t", True) is False, "an idle acker hands the write back"
        writer = threading.Thread(target=acker.write_own, args=("a", "t"), name="job-thread")
        writer.start()
        assert recorder.entered.acquire(timeout=10.0)
        # While the job thread writes, successes queue (one write at a time).
        assert acker.submit("b", "t", True) is True
        assert acker.submit("c", "t", True) is True
        assert acker.submit("d", "t") is True, "a caller that may not block queues"
        recorder.let_through(2)
        writer.join(10.0)
        assert acker.close(timeout=10.0) == set()
    finally:
        recorder.let_through(10)
    assert recorder.batches[0] == ("job-thread", [("a", "t")])
    assert recorder.batches[1:] == [("exqueue-acker", [("b", "t"), ("c", "t"), ("d", "t")])]


def test_a_success_its_job_thread_is_writing_counts_as_unwritten_at_a_stop() -> None:
    recorder = GatedRecorder()
    acker = make_acker(recorder)
    assert acker.submit("a", "t", True) is False
    writer = threading.Thread(target=acker.write_own, args=("a", "t"))
    writer.start()
    assert recorder.entered.acquire(timeout=10.0)
    try:
        # The stop must not release a job whose success may land a moment later.
        assert acker.close(timeout=0.0) == {"a"}
        assert not acker.busy()
    finally:
        recorder.let_through()
        writer.join(10.0)
    assert acker.close(timeout=10.0) == set()


def wake_after_first_of_two_batches(starved: bool) -> tuple[bool, bool]:
    """Whether the dispatcher was woken after the first batch, and after the last."""
    recorder = GatedRecorder()
    acker = make_acker(recorder, starved)
    try:
        assert acker.submit("a", "t") is True
        assert recorder.entered.acquire(timeout=10.0), "the acker took the first batch"
        assert acker.submit("b", "t") is True  # queued behind the batch being written
        recorder.let_through()
        # The acker decided on the first batch's wake-up before taking the second.
        assert recorder.entered.acquire(timeout=10.0), "the acker took the second batch"
        after_first = recorder.wake.is_set()
        recorder.let_through()
        acker.close(timeout=10.0)
        assert [batch for _, batch in recorder.batches] == [[("a", "t")], [("b", "t")]]
        return after_first, recorder.wake.is_set()
    finally:
        recorder.let_through(10)


def test_the_acker_wakes_the_dispatcher_after_its_last_queued_batch_only() -> None:
    assert wake_after_first_of_two_batches(starved=False) == (False, True)


def test_a_starved_lane_is_woken_for_after_every_batch() -> None:
    assert wake_after_first_of_two_batches(starved=True) == (True, True)


def last_write_with_a_claim(full: bool, wanting: bool) -> tuple[list[str] | None, bool]:
    """What the recorder was told the batch's write completed, and whether the
    dispatcher was woken after that write (the acker's last)."""
    recorder = GatedRecorder()
    acker = make_acker(recorder)
    claimed_with: list[list[tuple[str, str]]] = []

    def finish_any(batch: list[tuple[str, str]]) -> tuple[list[str], bool]:
        claimed_with.append(batch)
        return [job_id for job_id, _ in batch], full

    acker.finish_any = finish_any
    acker.wanting = lambda: wanting
    try:
        assert acker.submit("a", "t") is True
        recorder.let_through()
        acker.close(timeout=10.0)
    finally:
        recorder.let_through(10)
    assert claimed_with == [[("a", "t")]], "the batch went with a claim"
    return recorder.written_as[0], recorder.wake.is_set()


def test_a_write_whose_claim_came_back_full_leaves_the_dispatcher_asleep() -> None:
    # The next claim is the next write's (the claimed jobs' successes) or a job thread's.
    assert last_write_with_a_claim(full=True, wanting=False) == (["a"], False)


def test_a_write_with_a_claim_wakes_the_dispatcher_if_a_lane_still_wants_jobs() -> None:
    # Slots freed during the write (a failure, which the acker does not write) need a claim.
    assert last_write_with_a_claim(full=True, wanting=True) == (["a"], True)
    # A short claim: the lane's jobs ran out, and a drain waits to hear of it.
    assert last_write_with_a_claim(full=False, wanting=False) == (["a"], True)


def test_thread_jobs_on_a_batching_store_all_succeed_at_each_concurrency() -> None:
    class Batching(MemoryStorage):
        """A memory store that batches successes like a durable one (an acker runs)."""

        capabilities = MemoryStorage.capabilities | {"persistent"}

    for concurrency in (1, 4):
        queue = exqueue.Queue(Batching(), poll_interval=0.02)
        done: list[int] = []
        queue.worker(name="count", concurrency=concurrency)(done.append)
        queue.enqueue_many([queue.workers["count"].call(n) for n in range(50)])
        assert queue.drain(timeout=30.0) == 50
        assert sorted(done) == list(range(50))
        assert not queue.jobs(), "every success was written"
