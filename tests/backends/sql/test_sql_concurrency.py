"""Several OS processes over one SQL store take a serial type's jobs one at a time.
Plus PostgreSQL wake-ups (LISTEN/NOTIFY) across storage objects and threads.

That no job is claimed twice or lost across processes is the conformance
suite's ``process_race`` check, on every backend (``tests/conformance``)."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections import Counter

import pytest

from exqueue.storage import NewJob
from exqueue_sql import SQLStorage
from tests.support.backends import BackendHandle

PROCESSES = 4


def _claimer(
    url: str,
    prefix: str,
    serial: bool,
    out: multiprocessing.Queue[list[str]],
    ready: threading.Barrier,
) -> None:
    storage = SQLStorage(url, prefix=prefix)
    # Start together: a process spawned late could otherwise find every job taken.
    ready.wait(120)
    claimed: list[str] = []
    idle = 0
    while idle < 20:
        token = uuid.uuid4().hex
        got = storage.claim(
            "w", 1 if serial else 8, now=1.0, owner="p", token=token, lease_until=1e9, serial=serial
        )
        idle = 0 if got else idle + 1
        if not got:
            time.sleep(0.005)
        for record in got:
            claimed.append(record.id)
            assert storage.complete(record.id, token)
        if got and serial:
            # The completing process would otherwise win the next claim every time on
            # SQLite (it already holds the file's attention), and the run would be
            # one process's loop rather than a race.
            time.sleep(0.002)
    storage.close()
    out.put(claimed)


def _race(storage: SQLStorage, jobs: int, serial: bool) -> Counter[str]:
    ids = [f"j{i}" for i in range(jobs)]
    for start in range(0, jobs, 1000):
        storage.enqueue([NewJob(i, "w", b"", 0.0, 0.0, 1) for i in ids[start : start + 1000]])
    url = storage.engine.url.render_as_string(hide_password=False)
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[list[str]] = ctx.Queue()
    ready = ctx.Barrier(PROCESSES)
    procs = [
        ctx.Process(target=_claimer, args=(url, storage.prefix, serial, out, ready))
        for _ in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    seen = Counter(i for claimed in results for i in claimed)
    assert set(seen) == set(ids), "every job was claimed"
    assert seen.most_common(1)[0][1] == 1, "no job was claimed twice"
    assert storage.list_jobs() == [], "every job was completed"
    assert sum(1 for claimed in results if claimed) > 1, "the processes really raced"
    return seen


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mysql"], indirect=True)
def test_serial_worker_runs_one_at_a_time_across_processes(backend: BackendHandle) -> None:
    storage = backend.open()
    assert isinstance(storage, SQLStorage)
    # Each process completes before claiming again, so with the head rule the
    # jobs are claimed exactly once, in order, whichever process takes them.
    _race(storage, 200, serial=True)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_enqueue_wakes_a_waiting_storage(backend: BackendHandle) -> None:
    waiter, producer = backend.open(), backend.open()
    assert isinstance(waiter, SQLStorage)
    assert waiter.wait_for_jobs(5) is True  # starts listening: may have missed something
    assert waiter.wait_for_jobs(0.05) is False  # nothing happened
    woke: list[float] = []
    threads = [
        threading.Thread(
            target=lambda: woke.append(time.monotonic()) if waiter.wait_for_jobs(5) else None
        )
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    sent = time.monotonic()
    producer.enqueue([NewJob("a", "w", b"", 0.0, 0.0, 1)])
    for thread in threads:
        thread.join()
    assert len(woke) == 3, "every waiting thread woke"
    assert max(woke) - sent < 0.5
    assert waiter.wait_for_jobs(0.05) is False  # the wake-up was consumed


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_retry_release_requeue_notify(backend: BackendHandle) -> None:
    waiter, actor = backend.open(), backend.open()
    assert isinstance(waiter, SQLStorage)
    assert waiter.wait_for_jobs(1) is True  # starts listening
    actor.enqueue([NewJob("a", "w", b"", 0.0, 0.0, 1), NewJob("b", "w", b"", 0.0, 0.0, 1)])
    assert waiter.wait_for_jobs(1) is True
    actor.claim("w", 2, now=1.0, owner="o", token="t", lease_until=9.0)
    assert waiter.wait_for_jobs(0.05) is False  # a claim wakes nobody
    actor.schedule_retry("a", "t", run_at=0.0, error="e")
    assert waiter.wait_for_jobs(1) is True
    actor.release("b", "t")
    assert waiter.wait_for_jobs(1) is True
    assert actor.claim("w", 1, now=1.0, owner="o", token="t2", lease_until=9.0)[0].id == "a"
    assert actor.bury("a", "t2", error="x")
    assert waiter.wait_for_jobs(0.05) is False  # a burial wakes nobody
    assert actor.requeue("a", "a2", now=1.0) == "requeued"
    assert waiter.wait_for_jobs(1) is True


@pytest.mark.parametrize("backend", ["sqlite", "mysql"], indirect=True)
def test_no_wakeup_without_postgres(backend: BackendHandle) -> None:
    storage = backend.open()
    assert isinstance(storage, SQLStorage)
    with pytest.raises(NotImplementedError):
        storage.wait_for_jobs(0.01)
