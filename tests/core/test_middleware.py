"""Middleware hooks: every outcome reaches each middleware in order; a failing
middleware is logged and changes nothing about the jobs; ``on_dead`` is a hook;
log records about a job carry its id, worker type and attempt."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

import exqueue
from exqueue.storage import JobRecord, NewJob
from tests.support.clock import FakeClock


class Recording(exqueue.Middleware):
    def __init__(self, name: str, log: list[tuple[Any, ...]]) -> None:
        self.name = name
        self.log = log

    def enqueue(self, job: NewJob) -> NewJob:
        self.log.append((self.name, "enqueue", job.worker))
        return dataclasses.replace(job, meta={**job.meta, self.name: "seen"})

    def enqueued(self, job: NewJob, holder: str) -> None:
        self.log.append((self.name, "enqueued", job.id == holder))

    def started(self, job: JobRecord) -> None:
        self.log.append((self.name, "started", job.attempt))

    def succeeded(self, job: JobRecord, duration: float) -> None:
        assert duration >= 0
        self.log.append((self.name, "succeeded", job.attempt))

    def failed(
        self, job: JobRecord, error: BaseException, duration: float, retry_at: float
    ) -> None:
        self.log.append((self.name, "failed", job.attempt, str(error), retry_at))

    def dead(self, job: JobRecord, error: BaseException | None) -> None:
        self.log.append((self.name, "dead", job.attempt, str(error)))

    def process_started(self, node: str) -> None:
        self.log.append((self.name, "process_started", node))

    def process_stopped(self, node: str) -> None:
        self.log.append((self.name, "process_stopped", node))


class Exploding(exqueue.Middleware):
    """Raises in every hook."""

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("__"):
            return object.__getattribute__(self, name)

        def boom(*args: Any) -> Any:
            raise RuntimeError(f"middleware broke in {name}")

        return boom


def test_hooks_see_every_outcome_in_order(storage: exqueue.Storage) -> None:
    clock = FakeClock()
    events: list[tuple[Any, ...]] = []
    queue = exqueue.Queue(
        storage,
        clock=clock,
        node="n1",
        middleware=[Recording("a", events), Recording("b", events)],
    )
    seen_meta: list[dict[str, str]] = []

    @queue.worker(name="mw.flaky", max_retries=1, backoff=exqueue.Fixed(5))
    def flaky() -> None:
        job = exqueue.current_job()
        assert job is not None
        seen_meta.append(dict(job.meta))
        raise ValueError("nope")

    @queue.worker(name="mw.ok")
    def ok() -> None: ...

    ok.enqueue()
    flaky.enqueue()
    queue.drain()
    clock.advance(10)
    queue.drain()
    assert seen_meta[0] == {"a": "seen", "b": "seen"}
    by_a = [event[1:] for event in events if event[0] == "a"]
    assert [event[0] for event in events[:4]] == ["a", "b", "a", "b"]  # in order, each hook
    assert ("enqueue", "mw.ok") in by_a and ("enqueued", True) in by_a
    assert ("started", 1) in by_a and ("succeeded", 1) in by_a
    assert ("failed", 1, "nope", clock.now - 10 + 5) in by_a
    assert ("dead", 2, "nope") in by_a
    assert by_a.count(("process_started", "n1")) == 2
    assert by_a.count(("process_stopped", "n1")) == 2
    assert len(events) == 2 * len(by_a)


def test_a_failing_middleware_loses_and_repeats_nothing(
    storage: exqueue.Storage, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    queue = exqueue.Queue(storage, clock=clock, node="n1", middleware=[Exploding()])
    runs: list[int] = []
    dead: list[str] = []
    queue.on_dead(lambda job, exc: dead.append(job.id))

    @queue.worker(name="mw.count", concurrency=3)
    def count(n: int) -> None:
        runs.append(n)

    @queue.worker(name="mw.fails", max_retries=0)
    def fails() -> None:
        raise ValueError("x")

    for n in range(20):
        count.enqueue(n)
    dead_id = fails.enqueue()
    with caplog.at_level(logging.ERROR, logger="exqueue"):
        assert queue.drain() == 21
    assert sorted(runs) == list(range(20))
    assert queue.jobs() == [queue.get(dead_id)]
    assert dead == [dead_id]  # the on_dead shortcut ran after the broken middleware
    broken = [r for r in caplog.records if "middleware" in r.getMessage() and "raised" in r.message]
    assert {r.getMessage().rsplit(" ", 1)[-1] for r in broken} >= {
        "enqueue",
        "enqueued",
        "started",
        "succeeded",
        "dead",
        "process_started",
    }
    assert any(getattr(r, "worker", None) == "mw.count" for r in broken)


def test_enqueue_hook_returning_garbage_keeps_the_job() -> None:
    class Garbage(exqueue.Middleware):
        def enqueue(self, job: NewJob) -> NewJob:
            return "not a job"  # type: ignore[return-value]

    queue = exqueue.Queue("memory://", middleware=[Garbage()])

    @queue.worker(name="mw.g")
    def g(x: int) -> None: ...

    job_id = g.enqueue(1)
    job = queue.get(job_id)
    assert job is not None and job.args == (1,)


def test_only_middlewares_are_accepted() -> None:
    with pytest.raises(TypeError, match="exqueue.Middleware"):
        exqueue.Queue("memory://", middleware=[object()])  # type: ignore[list-item]


def test_log_records_about_a_job_carry_its_fields(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    queue = exqueue.Queue("memory://", clock=clock)

    @queue.worker(name="mw.logs", max_retries=1, backoff=exqueue.Fixed(1))
    def logs() -> None:
        raise ValueError("bad")

    job_id = logs.enqueue()
    with caplog.at_level(logging.INFO, logger="exqueue"):
        queue.drain()
        clock.advance(2)
        queue.drain()
    about = [r for r in caplog.records if getattr(r, "job_id", None) == job_id]
    assert [
        (r.levelname, getattr(r, "worker", None), getattr(r, "attempt", None)) for r in about
    ] == [
        ("INFO", "mw.logs", 1),
        ("ERROR", "mw.logs", 2),
    ]


def test_a_scheduled_tick_goes_through_the_enqueue_hook() -> None:
    clock = FakeClock()
    events: list[tuple[Any, ...]] = []
    queue = exqueue.Queue("memory://", clock=clock, middleware=[Recording("a", events)])
    tick = queue.worker(name="mw.tick")(lambda: None)
    queue.schedule("every-minute", every=60, call=tick.call())
    queue.fire_schedules()  # the first pass only notes when it first looked
    clock.advance(61)
    [job_id] = queue.fire_schedules()
    record = queue.storage.get(job_id)
    assert record is not None and record.meta["a"] == "seen"
    assert ("a", "enqueue", "mw.tick") in events
