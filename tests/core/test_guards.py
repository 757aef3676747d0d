"""Bad numbers, schedules and job functions are refused where they enter the API.

Each refusal is a clear error and leaves nothing stored, on MemoryStorage and on
SQLite. A sync job function that returns a coroutine or generator fails its
attempt instead of counting as a success with its body never run.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import exqueue
from exqueue import ConfigurationError, Exponential, Fixed, InvalidScheduleError
from exqueue_memory import MemoryStorage
from exqueue_sql import SQLStorage

NOW = 1_700_000_000.0


@pytest.fixture(params=["memory", "sqlite"])
def queue(request: Any, tmp_path: Path) -> Iterator[exqueue.Queue]:
    storage: exqueue.Storage = (
        MemoryStorage() if request.param == "memory" else SQLStorage(f"sqlite:///{tmp_path}/j.db")
    )
    q = exqueue.Queue(storage, clock=lambda: NOW, node="n", poll_interval=0.05)
    yield q
    q.close()


def nothing_stored(queue: exqueue.Queue) -> bool:
    return queue.storage.list_jobs(limit=10) == []


def noop() -> None:
    pass


# -- enqueue: delays and start times ---------------------------------------------------


@pytest.mark.parametrize("seconds", [math.inf, -math.inf, math.nan, 1e300, -1e300])
def test_enqueue_in_refuses_a_delay_that_is_not_a_reachable_time(
    queue: exqueue.Queue, seconds: float
) -> None:
    job = queue.worker(noop)
    with pytest.raises(InvalidScheduleError, match="finite number of seconds within 100 years"):
        job.enqueue_in(seconds)
    assert nothing_stored(queue)


@pytest.mark.parametrize("seconds", ["10", None, True, b"1"])
def test_enqueue_in_refuses_a_delay_that_is_not_a_number(
    queue: exqueue.Queue, seconds: Any
) -> None:
    job = queue.worker(noop)
    with pytest.raises(TypeError, match="must be a number of seconds"):
        job.enqueue_in(seconds)
    assert nothing_stored(queue)


def test_a_reasonable_delay_and_a_past_one_are_still_accepted(queue: exqueue.Queue) -> None:
    job = queue.worker(noop)
    later = job.enqueue_in(10)
    past = job.enqueue_in(-5.0)  # runs now, as before
    assert queue.storage.get(later).run_at == NOW + 10  # type: ignore[union-attr]
    assert queue.storage.get(past).run_at == NOW  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "when",
    [
        dt.datetime.max.replace(tzinfo=dt.UTC),
        dt.datetime(1, 1, 1, tzinfo=dt.UTC),
        dt.datetime(3000, 1, 1, tzinfo=dt.UTC),
        dt.datetime.min,
    ],
)
def test_enqueue_at_refuses_a_time_out_of_range(queue: exqueue.Queue, when: dt.datetime) -> None:
    job = queue.worker(noop)
    with pytest.raises(InvalidScheduleError, match="out of range|within 100 years"):
        job.enqueue_at(when)
    assert nothing_stored(queue)


def test_enqueue_at_refuses_what_is_not_a_datetime(queue: exqueue.Queue) -> None:
    job = queue.worker(noop)
    with pytest.raises(TypeError, match="needs a datetime"):
        job.enqueue_at(NOW + 10)  # type: ignore[arg-type]
    assert nothing_stored(queue)


@pytest.mark.parametrize(
    "call",
    [
        exqueue.Call("tests.core.test_guards.noop", delay=math.nan),
        exqueue.Call("tests.core.test_guards.noop", run_at=math.inf),
        exqueue.Call("tests.core.test_guards.noop", run_at=1e300),
        exqueue.Call("tests.core.test_guards.noop", delay="10"),  # type: ignore[arg-type]
    ],
)
def test_enqueue_many_stores_nothing_when_one_call_has_a_bad_schedule(
    queue: exqueue.Queue, call: exqueue.Call
) -> None:
    queue.worker(noop)
    good = exqueue.Call("tests.core.test_guards.noop")
    with pytest.raises((InvalidScheduleError, TypeError)):
        queue.enqueue_many([good, call])
    assert nothing_stored(queue)


# -- options ---------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [math.nan, math.inf, -1.0, 1e300, "5"])
def test_fixed_refuses_a_bad_delay(seconds: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"Fixed\(seconds\)"):
        Fixed(seconds)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"base": math.nan}, "base"),
        ({"base": -1.0}, "base"),
        ({"cap": math.inf}, "cap"),
        ({"cap": math.nan}, "cap"),
        ({"factor": math.nan}, "factor"),
        ({"factor": math.inf}, "factor"),
        ({"factor": 0.5}, "factor"),
        ({"jitter": math.nan}, "jitter"),
        ({"jitter": 2.0}, "jitter"),
    ],
)
def test_exponential_refuses_bad_parameters(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"Exponential\({field}\)"):
        Exponential(**kwargs)


def test_good_backoffs_still_work() -> None:
    assert Fixed(0).delay(3) == 0
    assert Exponential(base=1, factor=2, cap=10).delay(10) == 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lease": math.nan}, "lease must be a finite"),
        ({"lease": math.inf}, "lease must be a finite"),
        ({"lease": 0}, "lease must be positive"),
        ({"lease": -3}, "lease must be positive"),
        ({"poll_interval": math.nan}, "poll_interval must be a finite"),
        ({"prefetch": -5}, "prefetch must be at least 0"),
        ({"prefetch": 2.5}, "prefetch must be an integer"),
    ],
)
def test_queue_refuses_bad_options(kwargs: dict[str, Any], message: str) -> None:
    storage = MemoryStorage()
    with pytest.raises(ConfigurationError, match=message):
        exqueue.Queue(storage, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_retries": 2.5}, "max_retries must be an integer"),
        ({"max_retries": math.inf}, "max_retries must be an integer"),
        ({"max_retries": 2**40}, "max_retries must be from 0 to 10000"),
        ({"max_retries": -1}, "max_retries must be from 0 to 10000"),
        ({"concurrency": 2.5}, "concurrency must be an integer"),
        ({"concurrency": 0}, "concurrency must be at least 1"),
        ({"concurrency": -2}, "concurrency must be at least 1"),
    ],
)
def test_worker_refuses_bad_options(
    queue: exqueue.Queue, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        queue.worker(**kwargs)(noop)
    assert queue.workers == {}


def test_the_retry_bound_itself_is_accepted(queue: exqueue.Queue) -> None:
    assert queue.worker(max_retries=10_000)(noop).max_attempts == 10_001


# -- job functions that would not run --------------------------------------------------


async def async_job() -> None:
    pass


def generator_job() -> Iterator[int]:
    yield 1


async def async_generator_job() -> AsyncIterator[int]:
    yield 1


class AsyncCallable:
    async def __call__(self) -> None:
        pass


@pytest.mark.parametrize(
    ("fn", "kind"),
    [
        (generator_job, "a generator function"),
        (async_generator_job, "an async generator function"),
        (functools.partial(functools.partial(generator_job)), "a generator function"),
    ],
)
def test_registering_a_function_whose_body_would_not_run_is_refused(
    queue: exqueue.Queue, fn: Any, kind: str
) -> None:
    with pytest.raises(ConfigurationError, match=kind):
        queue.worker(name="w")(fn)
    assert queue.workers == {}


@pytest.mark.parametrize("fn", [async_job, functools.partial(async_job), AsyncCallable()])
def test_coroutine_functions_register_as_async_worker_types(queue: exqueue.Queue, fn: Any) -> None:
    assert queue.worker(name="w")(fn).is_async


def test_a_sync_worker_returning_a_coroutine_fails_its_attempt(queue: exqueue.Queue) -> None:
    ran: list[str] = []
    returned: list[Any] = []

    async def body() -> None:
        ran.append("body")

    def returns_coroutine() -> Any:
        ran.append("sync part")
        returned.append(body())
        return returned[-1]

    job_id = queue.worker(max_retries=0)(returns_coroutine).enqueue()
    assert queue.drain(timeout=30) == 1
    # Closed, so it is never reported as "never awaited".
    assert inspect.getcoroutinestate(returned[0]) == inspect.CORO_CLOSED
    record = queue.storage.get(job_id)
    assert record is not None and record.state == "dead"
    assert "returned a coroutine" in record.errors[-1]
    assert ran == ["sync part"]  # the coroutine's body never ran


def test_a_sync_worker_returning_a_generator_is_retried_then_dead(queue: exqueue.Queue) -> None:
    def returns_generator() -> Any:
        return (i for i in range(3))

    job_id = queue.worker(max_retries=1, backoff=Fixed(0))(returns_generator).enqueue()
    queue.drain(timeout=30)
    record = queue.storage.get(job_id)
    assert record is not None and record.state == "dead" and record.attempt == 2
    assert "returned a generator" in record.errors[-1]


def test_a_plain_worker_and_a_partial_of_one_still_run(queue: exqueue.Queue) -> None:
    seen: list[int] = []

    def add(n: int) -> None:
        seen.append(n)

    queue.worker(name="add")(functools.partial(add))
    queue.enqueue("add", 7)
    queue.drain(timeout=30)
    assert seen == [7]
    assert nothing_stored(queue)


# -- worker names ------------------------------------------------------------------------

BAD_NAMES = [
    ("w" * 256, "at most 255 characters"),
    ("bad\0name", "NUL"),
    ("lone\udc80surrogate", "lone surrogates"),
]


@pytest.mark.parametrize(("name", "message"), BAD_NAMES)
def test_registering_a_worker_name_no_backend_can_store_is_refused(
    queue: exqueue.Queue, name: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        queue.worker(name=name)(noop)
    assert queue.workers == {}


@pytest.mark.parametrize(("name", "message"), BAD_NAMES)
def test_enqueueing_for_a_worker_name_no_backend_can_store_is_refused(
    queue: exqueue.Queue, name: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        queue.enqueue_many([exqueue.Call(name, (), {})], allow_unknown=True)
    with pytest.raises(ValueError, match=message):
        queue.enqueue(name)
    assert nothing_stored(queue)


def test_the_longest_worker_name_is_accepted(queue: exqueue.Queue) -> None:
    job = queue.worker(name="w" * 255)(noop)
    job.enqueue()
    assert queue.drain(timeout=30) == 1
