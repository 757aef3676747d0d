"""A job keyword may share a name with an enqueue parameter (``seconds``, ``when``, ``worker``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import exqueue_memory
from exqueue import Call, Queue


def _queue() -> tuple[Queue, list[dict[str, Any]]]:
    queue = Queue(exqueue_memory.MemoryStorage())
    received: list[dict[str, Any]] = []

    @queue.worker(name="kw.record")
    def record(**kwargs: Any) -> None:
        received.append(kwargs)

    return queue, received


def test_enqueue_in_and_at_accept_seconds_and_when_keywords() -> None:
    queue, received = _queue()
    fn = queue.workers["kw.record"]
    fn.enqueue_in(0.0, seconds=3, when="now", worker="w")
    fn.enqueue_at(dt.datetime.now() - dt.timedelta(seconds=1), when="then", seconds=4)
    fn.enqueue(seconds=5)
    assert queue.drain(timeout=10) == 3
    assert sorted(received, key=lambda k: k["seconds"]) == [
        {"seconds": 3, "when": "now", "worker": "w"},
        {"when": "then", "seconds": 4},
        {"seconds": 5},
    ]


def test_queue_enqueue_and_enqueue_many_accept_worker_keyword() -> None:
    queue, received = _queue()
    queue.enqueue("kw.record", worker="inner", seconds=1)
    queue.enqueue_many([Call("kw.record", (), {"worker": "many", "calls": 2})])
    assert queue.drain(timeout=10) == 2
    assert {"worker": "inner", "seconds": 1} in received
    assert {"worker": "many", "calls": 2} in received


def test_option_names_stay_job_keywords() -> None:
    queue, received = _queue()
    fn = queue.workers["kw.record"]
    plain = fn.enqueue(priority=9, unique="u", meta="m", timeout=0, expires_in=-1)
    optioned = fn.options(priority=1).enqueue(priority=2, delay=-5)
    [many] = queue.enqueue_many([fn.options(priority=3).call(options="o", priority=4)])
    assert [queue.get(i).priority for i in (plain, optioned, many)] == [0, 1, 3]  # type: ignore[union-attr]
    assert queue.drain(timeout=10) == 3
    assert {"priority": 9, "unique": "u", "meta": "m", "timeout": 0, "expires_in": -1} in received
    assert {"priority": 2, "delay": -5} in received
    assert {"options": "o", "priority": 4} in received
