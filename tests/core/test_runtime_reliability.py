"""The runtime under faults of one worker type, one claim, one payload, one signal (issue #13).

Each test injects one fault into a real storage (a subclass of MemoryStorage or
of the SQLite storage that fails, waits or slows down at one call) or sends a
real signal to a real process, and checks what must hold: worker types are
independent (7), a claim that returns during a stop is released (4), a node
holds only a few times its concurrency of unrecorded successes (19), a healthy run
logs no lease warning (18), a second signal stops at once (24), and a payload
whose decoder raises anything makes that job dead at once with the reason (3/5).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import exqueue
from exqueue.codec import JSONCodec
from exqueue.storage import JobRecord, NewJob
from exqueue_memory import MemoryStorage
from tests.support.procapp import wait_until

REPO = Path(__file__).resolve().parents[2]


def sqlite_storage_class() -> Any:
    from exqueue_sql import SQLStorage

    return SQLStorage


# -- 7: one failing worker type --------------------------------------------------------


class ClaimFailsFor(MemoryStorage):
    """Every claim for one worker type raises, as a damaged store can make it."""

    def __init__(self, broken: str) -> None:
        super().__init__()
        self.broken = broken

    def claim(self, worker: str, limit: int, **kwargs: Any) -> list[JobRecord]:
        if worker == self.broken:
            raise RuntimeError(f"claim for {worker} exploded")
        return super().claim(worker, limit, **kwargs)


def test_a_worker_type_whose_claim_fails_does_not_stop_the_types_after_it() -> None:
    queue = exqueue.Queue(ClaimFailsFor("first"), poll_interval=0.05)
    ran: list[str] = []

    @queue.worker(name="first")
    def first() -> None:
        ran.append("first")

    @queue.worker(name="second")
    def second() -> None:
        ran.append("second")

    first.enqueue()
    second.enqueue()
    queue.start()
    try:
        wait_until(lambda: "second" in ran, "the second worker type to run its job", timeout=10.0)
    finally:
        queue.stop(timeout=5)
    assert ran == ["second"]
    assert [j.state for j in queue.jobs(worker="first")] == ["waiting"]


def test_a_drain_runs_the_other_types_while_one_types_claim_fails() -> None:
    queue = exqueue.Queue(ClaimFailsFor("first"), poll_interval=0.05)
    ran: list[int] = []
    queue.worker(name="first")(lambda: None)

    @queue.worker(name="second")
    def second(n: int) -> None:
        ran.append(n)

    for n in range(3):
        second.enqueue(n)
    queue.drain(timeout=3.0)
    assert sorted(ran) == [0, 1, 2]


# -- 4: a claim in flight when the node stops -----------------------------------------


class GatedClaim(MemoryStorage):
    """The first claim waits for ``gate`` before it claims anything."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def claim(self, worker: str, limit: int, **kwargs: Any) -> list[JobRecord]:
        if not self.entered.is_set():
            self.entered.set()
            self.gate.wait(10.0)
        return super().claim(worker, limit, **kwargs)


def test_a_claim_that_returns_while_the_node_stops_is_released() -> None:
    storage = GatedClaim()
    queue = exqueue.Queue(storage, poll_interval=0.05)
    queue.worker(name="slow", max_retries=0)(lambda: None)
    job_id = queue.enqueue("slow")
    queue.start()
    assert storage.entered.wait(10.0), "the dispatcher never claimed"
    # The claim returns while stop() is under way.
    opener = threading.Timer(0.3, storage.gate.set)
    opener.start()
    queue.stop(timeout=5.0)
    opener.join()
    job = queue.get(job_id)
    assert job is not None, "the job ran although the node was stopping"
    assert (job.state, job.attempt) == ("waiting", 0)


# -- 19: a bounded number of unrecorded successes --------------------------------------


def test_a_node_holds_a_bounded_number_of_unrecorded_successes(
    tmp_path: Path,
) -> None:
    base = sqlite_storage_class()
    completed: set[str] = set()

    class SlowCommits(base):  # type: ignore[misc, valid-type]
        """A store whose success commits are slow, as a busy disk makes them."""

        def complete_many(self, jobs: Sequence[tuple[str, str]], **now: float) -> list[str]:
            time.sleep(0.2)
            done: list[str] = super().complete_many(jobs, **now)
            completed.update(done)
            return done

        def finish_and_claim(self, request: Any) -> Any:
            # The acker writes a batch with its lane's next claim where it can: a
            # success commit all the same, as slow.
            time.sleep(0.2)
            finished = super().finish_and_claim(request)
            completed.update(finished.completed)
            return finished

    queue = exqueue.Queue(SlowCommits(f"sqlite:///{tmp_path / 'q.db'}"), poll_interval=0.05)
    concurrency = 2
    finished: list[str] = []
    most_unrecorded = 0

    @queue.worker(name="tiny", concurrency=concurrency)
    def tiny() -> None:
        nonlocal most_unrecorded
        # Jobs that finished but whose success is not yet stored: a SIGKILL now re-runs them.
        most_unrecorded = max(most_unrecorded, len(set(finished) - completed))
        context = exqueue.current_job()
        assert context is not None
        finished.append(context.id)

    queue.enqueue_many([tiny.call() for _ in range(60)])
    assert queue.drain(timeout=60.0) == 60
    assert not queue.jobs()
    # One batch being written, one queued behind it, one success per other thread
    # waiting for room: never the backlog a slow commit used to pile up.
    assert most_unrecorded <= 3 * concurrency


# -- 18: no false lease warnings -------------------------------------------------------


class SlowAfterComplete(MemoryStorage):
    """Success is stored at once, but the call returns late: a heartbeat lands between."""

    def complete(self, job_id: str, token: str, *, now: float | None = None) -> bool:
        done = super().complete(job_id, token, now=now)
        time.sleep(0.5)
        return done


def slow_after_complete_many_sqlite(path: Path) -> exqueue.Storage:
    base = sqlite_storage_class()

    class SlowAfterCompleteMany(base):  # type: ignore[misc, valid-type]
        def complete_many(self, jobs: Sequence[tuple[str, str]], **now: float) -> list[str]:
            done: list[str] = super().complete_many(jobs, **now)
            time.sleep(0.5)
            return done

    storage: exqueue.Storage = SlowAfterCompleteMany(f"sqlite:///{path / 'q.db'}")
    return storage


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_healthy_run_logs_no_lease_warning(
    store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage: exqueue.Storage = (
        SlowAfterComplete() if store == "memory" else slow_after_complete_many_sqlite(tmp_path)
    )
    # Heartbeats every 0.1 s: several land while the success call is returning.
    queue = exqueue.Queue(storage, lease=0.3, poll_interval=0.05)
    ran: list[int] = []
    queue.worker(name="once")(lambda n: ran.append(n))
    queue.enqueue("once", 1)
    with caplog.at_level(logging.INFO, logger="exqueue"):
        queue.start()
        try:
            wait_until(lambda: ran == [1] and not queue.jobs(), "the job to finish", timeout=10.0)
            time.sleep(0.6)  # let the slow call return while heartbeats go on
        finally:
            queue.stop(timeout=5.0)
    assert ran == [1]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []


# -- 24: a second signal ---------------------------------------------------------------

APP = """
import os, sys, time
import exqueue

queue = exqueue.Queue(sys.argv[1], node="hurried", poll_interval=0.05)

@queue.worker(name="long", max_retries=0)
def long() -> None:
    open(sys.argv[2], "w").close()
    time.sleep(120)

queue.run(stop_timeout=120)
"""


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_second_signal_stops_at_once_and_releases_the_running_job(
    second: signal.Signals, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    started = tmp_path / "started"
    with exqueue.Queue(url) as producer:
        producer.worker(name="long", max_retries=0)(lambda: None)
        job_id = producer.enqueue("long")
        app = tmp_path / "app.py"
        app.write_text(textwrap.dedent(APP))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, str(app), url, str(started)], env=env)
        try:
            wait_until(started.exists, "the job to start", timeout=30.0)
            proc.send_signal(signal.SIGTERM)
            time.sleep(1.5)  # past the repeat window; the stop now waits for the 120 s job
            proc.send_signal(second)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        job = producer.get(job_id)
        assert job is not None
        assert (job.state, job.attempt) == ("waiting", 0)


# -- 3/5: a payload the decoder cannot read --------------------------------------------


class PickyCodec(JSONCodec):
    """Decodes like JSON, but a payload starting with ``!`` makes it raise ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def decode(self, data: bytes) -> Any:
        if data.startswith(b"!"):
            raise self.error
        return super().decode(data)


@pytest.mark.parametrize(
    "error", [KeyError("tag"), ValueError("bad"), RecursionError("deep"), AttributeError("x")]
)
def test_a_payload_whose_decoder_raises_anything_makes_that_job_dead_at_once(
    error: Exception,
) -> None:
    storage = MemoryStorage()
    queue = exqueue.Queue(storage, codec=PickyCodec(error), poll_interval=0.05)
    ran: list[int] = []
    reported: list[tuple[str, BaseException | None]] = []
    queue.worker(name="w", max_retries=2)(lambda n: ran.append(n))
    queue.on_dead(lambda job, exc: reported.append((job.id, exc)))
    good = queue.enqueue("w", 1)
    storage.enqueue([NewJob("bad-1", "w", b"!boom", 0.0, 0.0, 3)])
    also_good = queue.enqueue("w", 2)
    assert queue.drain(timeout=10.0) == 3
    assert sorted(ran) == [1, 2]
    assert queue.get(good) is None and queue.get(also_good) is None
    record = storage.get("bad-1")
    assert record is not None
    assert (record.state, record.attempt) == ("dead", 1)
    assert "payload could not be decoded" in record.errors[-1]
    assert repr(error) in record.errors[-1] or str(error) in record.errors[-1]
    assert [job_id for job_id, _ in reported] == ["bad-1"]
    assert reported[0][1] is error
