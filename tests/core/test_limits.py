"""Cluster-wide limits and pause through the public API (issue 15), on the memory backend.

Registration refuses bad limits with a clear error; a partition is computed at
enqueue (argument name or function), and a failing partition function stores
the job dead with the reason; two nodes sharing one store never run more than
the limit (per partition); a rate limit spaces starts; pause and resume work
across nodes and show in ``stats`` and the CLI. The storage rules themselves
are proven on every backend by the conformance suite (``conformance/limits.py``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import Result

import exqueue
from exqueue.errors import ConfigurationError
from exqueue.limits import parse_rate
from exqueue.storage import LIMITS, PAUSE
from exqueue_memory import MemoryStorage
from tests.support.cli import app_module, run_app
from tests.support.clock import FakeClock


class Tracker:
    """Counts jobs running at once, per key, as the jobs themselves see it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.done = 0

    def hold(self, key: str, seconds: float = 0.01) -> None:
        with self.lock:
            self.running[key] = self.running.get(key, 0) + 1
            self.peak[key] = max(self.peak.get(key, 0), self.running[key])
        time.sleep(seconds)
        with self.lock:
            self.running[key] -= 1
            self.done += 1


# -- registration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"global_limit": 0}, "global_limit must be a positive int"),
        ({"global_limit": -2}, "global_limit must be a positive int"),
        ({"global_limit": True}, "global_limit must be a positive int"),
        ({"global_limit": 2.5}, "global_limit must be a positive int"),
        ({"rate_limit": "5/fortnight"}, "is not a rate"),
        ({"rate_limit": "0/s"}, "at least one start"),
        ({"rate_limit": "-1/s"}, "is not a rate"),
        ({"rate_limit": 5}, "must be a string"),
        ({"rate_limit": "5/0s"}, "longer than zero"),
        ({"partition": "customer"}, "give global_limit= or rate_limit= too"),
        ({"partition": "nope", "global_limit": 1}, "is not a parameter"),
        ({"partition": 3, "global_limit": 1}, "parameter name or a function"),
        ({"serial": True, "global_limit": 1}, "serial=True"),
        ({"serial": True, "rate_limit": "1/s"}, "serial=True"),
    ],
)
def test_bad_limits_are_refused_at_registration(options: dict[str, Any], message: str) -> None:
    queue = exqueue.Queue(MemoryStorage())

    def call_api(customer: str) -> None: ...

    with pytest.raises(ConfigurationError, match=message):
        queue.worker(name="api.call", **options)(call_api)
    assert "api.call" not in queue.workers


def test_rates_parse() -> None:
    assert parse_rate("100/m") == (100, 60.0)
    assert parse_rate("5/s") == (5, 1.0)
    assert parse_rate("3/h") == (3, 3600.0)
    assert parse_rate("1/d") == (1, 86400.0)
    assert parse_rate(" 5 / 10s ") == (5, 10.0)
    assert parse_rate("7/1.5m") == (7, 90.0)


class NoLimits(MemoryStorage):
    capabilities = MemoryStorage.capabilities - {LIMITS, PAUSE}


def test_storage_without_limits_is_refused() -> None:
    queue = exqueue.Queue(NoLimits())
    with pytest.raises(ConfigurationError, match="'limits'"):

        @queue.worker(global_limit=2)
        def job() -> None: ...

    with pytest.raises(ConfigurationError, match="'pause'"):
        queue.pause("anything")
    assert queue.paused() == frozenset()
    assert "paused" not in repr(queue.stats())  # no type to show, nothing paused


# -- partitions at enqueue ---------------------------------------------------------------------


def test_partition_from_an_argument_name_or_a_function() -> None:
    queue = exqueue.Queue(MemoryStorage())

    @queue.worker(name="by.name", global_limit=1, partition="customer")
    def by_name(order: int, customer: str | int = "anonymous", **extra: Any) -> None: ...

    @queue.worker(name="by.fn", rate_limit="10/s", partition=lambda url, **kw: url.split("/")[2])
    def by_fn(url: str, **kw: Any) -> None: ...

    @queue.worker(name="by.kwargs", global_limit=1, partition="tenant")
    def by_kwargs(**kw: Any) -> None: ...

    def partition(job_id: str) -> str | None:
        found = queue.get(job_id)
        assert found is not None
        return found.partition

    assert partition(by_name.enqueue(1, "acme")) == "acme"
    assert partition(by_name.enqueue(2, customer="acme")) == "acme"
    assert partition(by_name.enqueue(3)) == "anonymous"  # the default applies
    assert partition(by_name.enqueue(4, 42)) == "42"  # an int id is taken as text
    assert partition(by_fn.enqueue("https://api.example.com/x")) == "api.example.com"
    assert partition(by_kwargs.enqueue(tenant="t1")) == "t1"
    long_key = "ж" * 200  # 400 UTF-8 bytes
    hashed = partition(by_name.enqueue(5, long_key))
    assert hashed is not None and hashed.startswith("sha256:") and len(hashed) == 71
    assert hashed == partition(by_name.enqueue(6, long_key))  # the same key each time


@pytest.mark.parametrize(
    ("spec", "args", "reason"),
    [
        (lambda customer: customer["id"], ("acme",), "raised TypeError"),
        (lambda customer: 1 / 0, ("acme",), "raised ZeroDivisionError: division by zero"),
        (lambda customer: None, ("acme",), "must be a str, not NoneType"),
        (lambda customer: 7, ("acme",), "must be a str, not int"),
        ("customer", ([1, 2],), "must be a str, not list"),
        ("customer", (None,), "must be a str, not NoneType"),
    ],
)
def test_a_failing_partition_stores_the_job_dead(
    spec: Any, args: tuple[Any, ...], reason: str
) -> None:
    queue = exqueue.Queue(MemoryStorage())
    ran: list[Any] = []

    @queue.worker(name="api.call", global_limit=2, partition=spec, unique=True)
    def call_api(customer: Any) -> None:
        ran.append(customer)

    job_id = call_api.enqueue(*args)
    job = queue.get(job_id)
    assert job is not None and job.state == "dead" and job.attempt == 0
    assert len(job.errors) == 1 and reason in job.errors[0] and "api.call" in job.errors[0]
    assert job.unique_key is None and job.partition is None
    # It holds no unique key: the same call again is stored (dead again), not a duplicate.
    again = call_api.enqueue(*args)
    assert again != job_id and not again.duplicate
    assert queue.drain(timeout=10) == 0 and ran == []
    assert queue.stats()["api.call"].dead == 2


def test_arguments_that_do_not_fit_raise_and_store_nothing() -> None:
    queue = exqueue.Queue(MemoryStorage())

    @queue.worker(name="api.call", global_limit=2, partition="customer")
    def call_api(customer: str) -> None: ...

    with pytest.raises(TypeError, match="nothing was stored"):
        call_api.enqueue("a", "b")  # type: ignore[call-arg]
    assert queue.stats().get("api.call") is None or queue.stats()["api.call"].waiting == 0


# -- running under limits ----------------------------------------------------------------------


def test_two_nodes_never_exceed_a_global_limit_per_partition() -> None:
    storage = MemoryStorage()
    tracker = Tracker()
    queues = [exqueue.Queue(storage, node=f"node-{n}", poll_interval=0.02) for n in range(2)]
    for queue in queues:

        @queue.worker(name="api.call", concurrency=6, global_limit=2, partition="customer")
        def call_api(customer: str, n: int) -> None:
            tracker.hold(customer)

        @queue.worker(name="api.total", concurrency=6, global_limit=3)
        def total(n: int) -> None:
            tracker.hold("total")

    for n in range(30):
        queues[0].enqueue("api.call", f"c{n % 3}", n)
        queues[0].enqueue("api.total", n)
    for queue in queues:
        queue.start()
    try:
        deadline = time.monotonic() + 30
        while tracker.done < 60 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        for queue in queues:
            queue.stop()
    assert tracker.done == 60
    assert tracker.peak == {"c0": 2, "c1": 2, "c2": 2, "total": 3}


def test_a_rate_limit_spaces_starts_without_spending_attempts() -> None:
    clock = FakeClock()
    queue = exqueue.Queue(MemoryStorage(), clock=clock)
    started: list[float] = []

    @queue.worker(name="api.rated", rate_limit="2/10s", max_retries=0)
    def rated(n: int) -> None:
        started.append(clock.now)

    for n in range(5):
        rated.enqueue(n)
    assert queue.drain(timeout=10) == 2  # two starts, then the window is full
    clock.advance(10)
    assert queue.drain(timeout=10) == 2
    clock.advance(5)
    assert queue.drain(timeout=10) == 0  # the last two started 5 s ago
    clock.advance(5)
    assert queue.drain(timeout=10) == 1
    assert started == [clock.now - 20] * 2 + [clock.now - 10] * 2 + [clock.now]
    assert queue.stats()["api.rated"].dead == 0  # waiting spent no attempt


def test_a_full_limit_does_not_spin_on_the_store() -> None:
    """A lane whose limited claims come back short waits for the poll or a wake-up."""

    class Counting(MemoryStorage):
        claims = 0

        def claim_limited(self, request: Any) -> Any:
            Counting.claims += 1
            return super().claim_limited(request)

    storage = Counting()
    release = threading.Event()
    queue = exqueue.Queue(storage, poll_interval=0.2)

    @queue.worker(name="api.slow", concurrency=4, global_limit=1)
    def slow(n: int) -> None:
        release.wait(5)

    for n in range(4):
        slow.enqueue(n)
    queue.start()
    try:
        time.sleep(1.0)  # one job runs, three wait for its slot
        during = Counting.claims
    finally:
        release.set()
        queue.stop()
    assert during <= 15, f"{during} limited claims in one second while the limit was full"


def test_pause_and_resume_across_nodes() -> None:
    storage = MemoryStorage()
    ran: list[int] = []
    producer = exqueue.Queue(storage)
    node = exqueue.Queue(storage, poll_interval=0.02)
    for queue in (producer, node):

        @queue.worker(name="api.report")
        def report(n: int) -> None:
            ran.append(n)

    producer.pause("api.report")
    producer.pause("api.report")  # idempotent
    assert node.paused() == frozenset({"api.report"})
    producer.enqueue("api.report", 1)
    assert node.drain(timeout=10) == 0 and ran == []
    stats = node.stats()["api.report"]
    assert stats.paused and stats.waiting == 1
    producer.resume("api.report")
    assert node.drain(timeout=10) == 1 and ran == [1]
    assert not node.stats()["api.report"].paused
    with pytest.raises(ConfigurationError):
        producer.pause("")


# -- the CLI ---------------------------------------------------------------------------------

APP = "exqueue_limits_cli_app"


@pytest.fixture
def app_queue() -> Iterator[exqueue.Queue]:
    with app_module(APP) as queue:
        yield queue


def run(*args: str) -> Result:
    return run_app(APP, *args)


def test_cli_pause_resume_stats_and_show(app_queue: exqueue.Queue) -> None:
    @app_queue.worker(name="api.call", global_limit=5, partition="customer")
    def call_api(customer: str) -> None: ...

    job_id = call_api.enqueue("acme")
    result = run("pause", "api.call", "other.type")
    assert result.exit_code == 0 and "paused api.call" in result.output
    assert app_queue.paused() == frozenset({"api.call", "other.type"})
    table = run("stats").output
    row = next(line for line in table.splitlines() if line.startswith("api.call"))
    assert "PAUSED" in row
    rows = json.loads(run("stats", "--json").output)
    assert rows["api.call"]["paused"] is True and rows["other.type"]["paused"] is True
    assert run("resume", "other.type").exit_code == 0
    rows = json.loads(run("stats", "--json").output)
    assert rows["api.call"]["paused"] is True and "other.type" not in rows
    assert run("resume", "api.call").exit_code == 0
    assert "PAUSED" not in run("stats").output
    shown = run("show", job_id).output
    assert any(line.split() == ["partition", "acme"] for line in shown.splitlines())
    assert json.loads(run("show", job_id, "--json").output)["partition"] == "acme"


def test_async_jobs_keep_the_limit() -> None:
    import asyncio

    queue = exqueue.Queue(MemoryStorage())
    state = {"now": 0, "peak": 0}

    @queue.worker(name="api.async", concurrency=10, global_limit=2)
    async def call(n: int) -> None:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.02)
        state["now"] -= 1

    for n in range(12):
        call.enqueue(n)
    assert queue.drain(timeout=20) == 12
    assert state["peak"] == 2
