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
