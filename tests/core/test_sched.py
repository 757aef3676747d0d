"""The job threads' scheduling policy: the default unless ``EXQUEUE_SCHED_BATCH=1``.

With it (Linux), thread jobs run under ``SCHED_BATCH`` (see ``exqueue.runtime.sched``);
the thread that started the node keeps its own policy.
"""

from __future__ import annotations

import os

import pytest

import exqueue
from exqueue.runtime.sched import ENV
from exqueue_memory import MemoryStorage

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_getscheduler") or not hasattr(os, "SCHED_BATCH"),
    reason="no SCHED_BATCH on this OS",
)


def policies_seen(concurrency: int) -> set[int]:
    queue = exqueue.Queue(MemoryStorage())
    seen: set[int] = set()

    @queue.worker(name="look", concurrency=concurrency)
    def look() -> None:
        seen.add(os.sched_getscheduler(0))

    queue.enqueue_many([look.call() for _ in range(6)])
    assert queue.drain(timeout=30.0) == 6
    return seen


def test_job_threads_keep_the_default_policy_unless_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert policies_seen(3) == {os.sched_getscheduler(0)}


def test_job_threads_run_under_sched_batch_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.sched_getscheduler(0) != os.SCHED_OTHER:
        pytest.skip("the test process does not run under the default policy")
    monkeypatch.setenv(ENV, "1")
    assert policies_seen(3) == {os.SCHED_BATCH}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER, "the caller's own thread is left alone"
