"""Protocol-2 options are checked where they enter: a clear error, nothing stored.

Priority, unique key, meta, timeout and expiry, per enqueue (``fn.options``,
``Call(options=...)``) and per worker type; and an option whose storage
capability the backend does not declare is refused, naming both.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import pytest

import exqueue
from exqueue import Call, ConfigurationError, InvalidScheduleError, JobOptions, Uniqueness
from exqueue.storage import COMPLETE_MANY, METADATA, PRIORITY, WAKEUP, NewJob
from exqueue_memory import MemoryStorage
from tests.support.clock import FakeClock


class NarrowMemory(MemoryStorage):
    """A memory store declaring only some protocol-2 capabilities (as a partial backend)."""

    def __init__(self, capabilities: frozenset[str]) -> None:
        super().__init__()
        self.capabilities = capabilities


class VersionOneMemory(MemoryStorage):
    """A version-1 backend: no protocol-2 capability, and enqueue returns None."""

    capabilities = frozenset({WAKEUP, COMPLETE_MANY})

    def enqueue(self, jobs: Sequence[NewJob]) -> None:  # type: ignore[override]
        super().enqueue(jobs)


def make_queue(storage: Any = None, clock: FakeClock | None = None) -> exqueue.Queue:
    queue = exqueue.Queue(storage or MemoryStorage(), clock=clock or FakeClock())

    @queue.worker(name="opt.job")
    def job(user_id: int, lang: str = "en") -> None:
        del user_id, lang

    return queue


def refused(queue: exqueue.Queue, error: type[Exception], match: str, **options: Any) -> None:
    fn = queue.workers["opt.job"]
    before = queue.jobs()
    with pytest.raises(error, match=match):
        fn.options(**options).enqueue(1)
    with pytest.raises(error, match=match):
        queue.enqueue_many(
            [Call("opt.job", (2,)), Call("opt.job", (3,), options=JobOptions(**options))]
        )
    assert queue.jobs() == before, "nothing may be stored"


@pytest.mark.parametrize("priority", [True, "1", 1.0, None.__class__, 2**31, -(2**31) - 1])
def test_a_priority_must_be_an_int32(priority: Any) -> None:
    refused(make_queue(), ConfigurationError, "priority", priority=priority)


def test_priority_bounds_are_accepted() -> None:
    queue = make_queue()
    fn = queue.workers["opt.job"]
    low = fn.options(priority=-(2**31)).enqueue(1)
    high = fn.options(priority=2**31 - 1).enqueue(2)
    assert [queue.get(low).priority, queue.get(high).priority] == [-(2**31), 2**31 - 1]  # type: ignore[union-attr]


def test_a_unique_key_is_at_most_255_utf8_bytes() -> None:
    queue = make_queue()
    refused(queue, ConfigurationError, "255 UTF-8 bytes", unique="é" * 128)  # 256 bytes
    refused(queue, ConfigurationError, "must not be empty", unique="")
    refused(queue, ConfigurationError, "NUL", unique="a\0b")
    job_id = queue.workers["opt.job"].options(unique="é" * 127 + "x").enqueue(1)  # 255 bytes
    assert queue.get(job_id).unique_key == "é" * 127 + "x"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        ({"k": 1}, "must be a string"),
        ({1: "v"}, "must be a string"),
        (["k", "v"], "mapping"),
        ({"": "v"}, "must not be empty"),
        ({f"k{n}": "v" for n in range(65)}, "at most 64 entries"),
        ({"k": "v" * 8192}, "8192 UTF-8 bytes"),
        ({"k": "\ud800"}, "lone surrogates"),
    ],
)
def test_meta_must_be_small_str_to_str(meta: Any, match: str) -> None:
    refused(make_queue(), ConfigurationError, match, meta=meta)


def test_meta_at_its_limits_is_accepted() -> None:
    queue = make_queue()
    meta = {f"k{n:02}": "v" for n in range(63)} | {"big": "x" * (8192 - 63 * 4 - 3)}
    job_id = queue.workers["opt.job"].options(meta=meta).enqueue(1)
    assert queue.get(job_id).meta == meta  # type: ignore[union-attr]


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf, True, "5", dt.timedelta(0)])
def test_a_timeout_is_a_positive_number_of_seconds(timeout: Any) -> None:
    refused(make_queue(), ConfigurationError, "timeout", timeout=timeout)


def test_an_expiry_in_the_past_or_before_the_start_is_refused() -> None:
    clock = FakeClock()
    queue = make_queue(clock=clock)
    refused(queue, InvalidScheduleError, "in the past", expires_at=clock.now - 1)
    refused(queue, InvalidScheduleError, "in the past", expires_at=clock.now)
    past = dt.datetime.fromtimestamp(clock.now - 60, tz=dt.UTC)
    refused(queue, InvalidScheduleError, "in the past", expires_at=past)
    refused(queue, ConfigurationError, "expires_in", expires_in=0)
    refused(queue, InvalidScheduleError, "before it may start", expires_in=10, delay=20)
    refused(queue, ConfigurationError, "not both", expires_in=10, expires_at=clock.now + 5)
    refused(queue, ConfigurationError, "not both", delay=1, run_at=clock.now + 5)


def test_options_start_and_a_calls_start_are_not_both_given() -> None:
    queue = make_queue()
    with pytest.raises(ConfigurationError, match="given twice"):
        queue.enqueue_many([Call("opt.job", (1,), delay=5, options=JobOptions(delay=1))])
    assert queue.jobs() == []


def test_uniqueness_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        Uniqueness("k", args=["a"])
    with pytest.raises(ConfigurationError, match="takes waiting, running, dead"):
        Uniqueness(states=["done"])
    with pytest.raises(ConfigurationError, match="period"):
        Uniqueness(period=0)
    with pytest.raises(ConfigurationError, match="parameter names"):
        Uniqueness(args=["not a name"])
    with pytest.raises(ConfigurationError, match="unique must be"):
        JobOptions(unique=3)  # type: ignore[arg-type]
    assert Uniqueness(states=["dead"]).states == {"waiting", "dead"}
    assert Uniqueness(period=dt.timedelta(minutes=1)).period == 60.0


def test_an_unknown_option_is_a_type_error_naming_the_options() -> None:
    queue = make_queue()
    fn = queue.workers["opt.job"]
    for make in (
        lambda: fn.options(prio=1),  # type: ignore[call-arg]
        lambda: fn.options(priority=1).options(prio=1),  # type: ignore[call-arg]
        lambda: JobOptions(prio=1),  # type: ignore[call-arg]
    ):
        with pytest.raises(TypeError, match="'prio' .options: priority, unique, meta"):
            make()
    assert queue.jobs() == []


def test_unique_args_must_name_parameters() -> None:
    queue = make_queue()
    with pytest.raises(ConfigurationError, match="'nope', which is not a parameter"):

        @queue.worker(name="opt.bad", unique=Uniqueness(args=["nope"]))
        def bad(user_id: int) -> None: ...

    refused(queue, ConfigurationError, "which is not a parameter", unique=Uniqueness(args="x"))


def test_a_key_derived_from_arguments_needs_json_values() -> None:
    queue = make_queue()
    with pytest.raises(ConfigurationError, match="JSON values"):
        queue.workers["opt.job"].options(unique=True).enqueue(object())
    with pytest.raises(TypeError, match="do not fit opt.job"):
        queue.workers["opt.job"].options(unique=True).enqueue(1, 2, 3)
    assert queue.jobs() == []


def test_a_derived_key_needs_the_worker_function() -> None:
    queue = make_queue()
    unique = JobOptions(unique=True)
    with pytest.raises(ConfigurationError, match="not registered on this queue"):
        queue.enqueue_many([Call("other.app", (1,), options=unique)], allow_unknown=True)
    explicit = JobOptions(unique="user-1", priority=3)
    [job_id] = queue.enqueue_many([Call("other.app", (1,), options=explicit)], allow_unknown=True)
    job = queue.get(job_id)
    assert job is not None and (job.unique_key, job.priority) == ("user-1", 3)


@pytest.mark.parametrize(
    ("options", "capability"),
    [
        ({"priority": 1}, "priority"),
        ({"meta": {"a": "b"}}, "metadata"),
        ({"timeout": 5}, "metadata"),
        ({"unique": True}, "unique"),
        ({"unique": "key"}, "unique"),
        ({"expires_in": 60}, "expiry"),
    ],
)
def test_an_option_the_backend_cannot_honour_is_refused(
    options: dict[str, Any], capability: str
) -> None:
    queue = make_queue(VersionOneMemory())
    message = f"capability '{capability}', which VersionOneMemory does not declare"
    refused(queue, ConfigurationError, message, **options)
    with pytest.raises(ConfigurationError, match=message):
        queue.worker(name="opt.defaults", **options)(lambda user_id: None)
    assert "opt.defaults" not in queue.workers


def test_a_partial_backend_gets_only_what_it_declares() -> None:
    queue = make_queue(NarrowMemory(frozenset({PRIORITY, METADATA})))
    fn = queue.workers["opt.job"]
    job_id = fn.options(priority=2, meta={"t": "1"}, timeout=3).enqueue(1)
    assert queue.get(job_id).priority == 2  # type: ignore[union-attr]
    refused(queue, ConfigurationError, "'unique', which NarrowMemory", unique="k")
    with pytest.raises(ConfigurationError, match="capability 'metadata'"):
        make_queue(NarrowMemory(frozenset({PRIORITY}))).jobs(tag=("t", "1"))


def test_neutral_options_need_no_capability() -> None:
    queue = make_queue(VersionOneMemory())
    fn = queue.workers["opt.job"]
    first = fn.options(priority=0, unique=False, delay=0).enqueue(1)
    [second] = queue.enqueue_many([fn.options().call(2)])
    assert (first.duplicate, second.duplicate) == (False, False)
    assert {job.id for job in queue.jobs()} == {first, second}


def test_a_version_one_backend_returning_none_gives_the_new_ids() -> None:
    queue = make_queue(VersionOneMemory())
    fn = queue.workers["opt.job"]
    job_id = fn.enqueue(1)
    ids = queue.enqueue_many([fn.call(2), fn.call(3)])
    assert isinstance(job_id, exqueue.JobId) and not job_id.duplicate
    assert [job.id for job in queue.jobs()] == [job_id, *ids]
    assert queue.drain(timeout=10) == 3


def test_neutral_worker_defaults_are_no_defaults() -> None:
    queue = make_queue(VersionOneMemory())

    @queue.worker(name="opt.neutral", priority=0, unique=False, meta={})
    def neutral() -> None: ...

    assert neutral.defaults is None
    assert not neutral.enqueue().duplicate


def test_unique_args_may_name_keywords_caught_by_var_keyword() -> None:
    queue = make_queue()

    @queue.worker(name="opt.kw", unique=Uniqueness(args=["tenant", "n"]))
    def kw(n: int, **extra: str) -> None: ...

    first = kw.enqueue(1, tenant="a", note="x")
    assert kw.enqueue(n=1, tenant="a", note="y").duplicate
    assert not kw.enqueue(1, tenant="b").duplicate
    assert not kw.enqueue(1).duplicate  # no tenant: a key of its own
    assert queue.get(first).unique_key == '{"n":1,"tenant":"a"}'  # type: ignore[union-attr]
