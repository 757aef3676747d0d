"""Area: races. Threads and processes at once: claims stay exclusive, seq stays unique.

The state machine runs one operation at a time, so it cannot see a claim or an
enqueue that is not atomic. Here several threads (sharing one storage object)
or processes (each with its own) claim and enqueue at the same time; the
race bodies live in :mod:`conformance.concurrency`.

This module also holds the plumbing every race of the suite shares
(:func:`run_threads`, :func:`run_processes`): start the racers together at a
barrier, collect what each returns, and turn a crash, a hang or an unpicklable
factory into a clear failure. It imports no Hypothesis, so spawned children
(which import the module of their body) start quickly.
"""

from __future__ import annotations

import multiprocessing
import pickle
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from conformance.base import Check, RuleBroken, StorageFactory, expect, job, opened, unique
from conformance.concurrency import race_processes, race_threads
from exqueue.storage import MULTI_PROCESS

if TYPE_CHECKING:
    from hypothesis import settings as Settings

AREA = "races"

R = TypeVar("R")


class Barrier(Protocol):
    """What a racer waits on: a ``threading.Barrier`` or a ``multiprocessing`` one."""

    def wait(self, timeout: float | None = None) -> int: ...


def run_threads(
    body: Callable[[int, Barrier], R], threads: int, *, timeout: float = 120
) -> list[R]:
    """Run ``body(index, start)`` in ``threads`` threads; their results in index order.

    ``start`` is a barrier of ``threads`` parties the bodies wait on (once, or once
    per round) so they act at the same moment. A body that raises or hangs fails
    the race with what it raised.
    """
    start = threading.Barrier(threads)
    results: dict[int, R] = {}
    problems: list[str] = []
    lock = threading.Lock()

    def racer(index: int) -> None:
        try:
            result = body(index, start)
        except BaseException as exc:  # reported by the caller's thread
            start.abort()  # the others must not wait for this one forever
            with lock:
                problems.append(f"thread {index}: {exc!r}")
            return
        with lock:
            results[index] = result

    pool = [threading.Thread(target=racer, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in pool), "a racing thread hung"
    assert not problems, "a racing thread failed:\n" + "\n".join(problems[:10])
    return [results[index] for index in range(threads)]


def picklable(factory: StorageFactory) -> None:
    """Fail clearly unless ``factory`` can be sent to a spawned process."""
    try:
        pickle.dumps(factory)
    except Exception as exc:
        raise AssertionError(
            "the backend declares MULTI_PROCESS, so the suite starts racers in new "
            "processes and needs a picklable storage factory: return a module-level "
            "function, the storage class, or functools.partial(MyStorage, location) "
            f"from make_storage ({exc!r})"
        ) from exc


def _child(
    factory: StorageFactory,
    body: Callable[..., Any],
    index: int,
    args: tuple[Any, ...],
    start: Any,
    out: Any,
) -> None:
    """A spawned racer: open its own storage, run the body, report (index, result, error)."""
    result: Any = None
    error = None
    try:
        storage = factory()
        try:
            result = body(storage, index, start, *args)
        finally:
            storage.close()
    except BaseException as exc:
        error = repr(exc)
        start.abort()
    out.put((index, result, error))


def run_processes(
    factory: StorageFactory,
    body: Callable[..., R],
    processes: int,
    args: tuple[Any, ...] = (),
    *,
    timeout: float = 180,
) -> list[R]:
    """Run ``body(storage, index, start, *args)`` in ``processes`` spawned processes.

    Each opens its own storage with ``factory`` (which must be picklable, as must
    ``body``: a module-level function, and ``args``). ``start`` is a barrier of
    ``processes`` parties. The results, in index order; a failed body fails the race.
    """
    picklable(factory)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes)
    out = context.Queue()
    children = [
        context.Process(target=_child, args=(factory, body, i, args, start, out), daemon=True)
        for i in range(processes)
    ]
    for child in children:
        child.start()
    try:
        reports = [out.get(timeout=timeout) for _ in children]
    finally:
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
    errors = [f"process {index}: {error}" for index, _, error in reports if error]
    assert not errors, "a racing process failed:\n" + "\n".join(errors)
    results = dict((index, result) for index, result, _ in reports)
    return [results[index] for index in range(processes)]


RACE_RULE = (
    "claim is atomic: while a lease is held no other claimer gets the job, every job is "
    "claimed and completed exactly once, none is lost"
)


def check_thread_race(factory: StorageFactory, settings: Settings) -> None:
    """Threads racing to claim from one storage object: no double claim, no loss."""
    with opened(factory) as (_, storage):
        try:
            race_threads(storage)
        except AssertionError as exc:
            raise RuleBroken(f"rule broken: {RACE_RULE} (threads) -- {exc}") from exc


def check_process_race(factory: StorageFactory, settings: Settings) -> None:
    """MULTI_PROCESS: spawned processes racing to claim: no double claim, no loss."""
    with opened(factory):
        pass  # empties the store before the children start
    try:
        race_processes(factory)
    except AssertionError as exc:
        raise RuleBroken(f"rule broken: {RACE_RULE} (processes) -- {exc}") from exc


def check_concurrent_enqueue(factory: StorageFactory, settings: Settings) -> None:
    """Threads enqueueing at once get distinct seq values, each thread's jobs in its order."""
    threads, per_thread = 4, 40
    with opened(factory) as (_, storage):
        worker = unique("enq-race")
        start = threading.Barrier(threads)
        errors: list[BaseException] = []

        def producer(index: int) -> None:
            try:
                start.wait()
                for n in range(per_thread):
                    size = 1 + n % 3
                    storage.enqueue([job(f"e{index}-{n:03d}-{k}", worker) for k in range(size)])
            except BaseException as exc:  # reported below
                errors.append(exc)

        pool = [threading.Thread(target=producer, args=(i,), daemon=True) for i in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(120)
        expect(not errors, "concurrent enqueues of distinct ids all succeed", errors[:3])
        listed = storage.list_jobs(worker=worker, limit=100_000)
        total = threads * sum(1 + n % 3 for n in range(per_thread))
        expect(len(listed) == total, "no concurrent enqueue is lost", f"{len(listed)} of {total}")
        seqs = [r.seq for r in listed]
        expect(
            len(set(seqs)) == len(seqs),
            "every job gets its own seq, even when threads enqueue at once",
            f"{len(seqs) - len(set(seqs))} seq values repeated",
        )
        for index in range(threads):
            mine = [r.id for r in listed if r.id.startswith(f"e{index}-")]
            expect(
                mine == sorted(mine),
                "each thread's jobs are in its enqueue order (seq strictly increasing)",
                f"thread {index}: {mine[:6]}...",
            )


CHECKS = [
    Check("concurrent_enqueue", None, check_concurrent_enqueue, AREA),
    Check("thread_race", None, check_thread_race, AREA),
    Check("process_race", MULTI_PROCESS, check_process_race, AREA),
]
