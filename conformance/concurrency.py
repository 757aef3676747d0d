"""Real races: threads sharing one storage object, and OS processes sharing one store.

The state machine runs one operation at a time, so it cannot see a claim that is
not atomic. Here several claimers hammer one worker type at once; afterwards every
job must have been claimed by exactly one holder at a time, completed exactly
once, and none may be left behind.

The process check uses ``multiprocessing`` with the ``spawn`` start method (what
macOS and Windows use, and what a fork-unsafe driver needs), so the storage
factory must be picklable: a module-level function, a class, or a
``functools.partial`` of one. This module imports no Hypothesis so that spawned
children start quickly.
"""

from __future__ import annotations

import multiprocessing
import pickle
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from exqueue.storage import NewJob, Storage

StorageFactory = Callable[[], Storage]

NOW = 1_700_000_000.0
#: Long enough that no lease expires during a race: any second claim is a bug.
LEASE = 3600.0


def _jobs(worker: str, count: int, tag: str) -> list[NewJob]:
    return [
        NewJob(
            id=f"race-{tag}-{n}",
            worker=worker,
            payload=str(n).encode(),
            run_at=NOW,
            enqueued_at=NOW,
            max_attempts=3,
        )
        for n in range(count)
    ]


def _assert_drained(storage: Storage, worker: str, ids: set[str]) -> None:
    left = [r.id for r in storage.list_jobs(worker=worker, limit=len(ids) + 10)]
    assert not left, f"jobs left behind after every claimer finished: {left[:10]}"
    assert all(storage.get(job_id) is None for job_id in ids), "a completed job is still stored"


def race_threads(storage: Storage, *, threads: int = 4, jobs: int = 200) -> None:
    """Threads share ``storage``; some claims are released and claimed again."""
    tag = uuid.uuid4().hex[:8]
    worker = f"race.threads.{tag}"
    batch = _jobs(worker, jobs, tag)
    storage.enqueue(batch[: jobs // 2])
    lock = threading.Lock()
    holders: dict[str, int] = {}  # job id -> thread currently holding it
    released: set[str] = set()
    completed: Counter[str] = Counter()
    problems: list[str] = []
    start = threading.Barrier(threads + 1)
    all_in = threading.Event()
    deadline = time.monotonic() + 60.0

    def claimer(index: int) -> None:
        try:
            start.wait()
            idle = 0
            # A backend that hands out held jobs again could keep this loop busy
            # forever; the bound turns that into a reported failure.
            budget = 4 * jobs
            while idle < 3:
                budget -= 1
                if budget < 0 or time.monotonic() > deadline:
                    problems.append(f"thread {index} was still claiming after {4 * jobs} claims")
                    return
                token = f"t{index}-{uuid.uuid4().hex}"
                got = storage.claim(
                    worker,
                    1 + index % 3,
                    now=NOW,
                    owner=f"thread-{index}",
                    token=token,
                    lease_until=NOW + LEASE,
                )
                if not got:
                    # Only an empty claim after the last enqueue means the work is done.
                    idle += all_in.is_set()
                    time.sleep(0.005)
                    continue
                idle = 0
                for record in got:
                    with lock:
                        if record.id in holders:
                            problems.append(
                                f"{record.id} claimed by thread {index} while thread "
                                f"{holders[record.id]} holds its lease"
                            )
                        holders[record.id] = index
                        release = record.id not in released and len(released) < jobs // 5
                        if release:
                            released.add(record.id)
                    if release:
                        # Forget the hold before giving it back, or a fast
                        # re-claim by another thread would look like a double claim.
                        with lock:
                            del holders[record.id]
                        if not storage.release(record.id, token):
                            problems.append(f"release of {record.id} refused")
                        continue
                    if record.attempt != 1:
                        problems.append(f"{record.id} has attempt {record.attempt}, expected 1")
                    with lock:
                        del holders[record.id]
                    ok = storage.complete(record.id, token)
                    with lock:
                        if ok:
                            completed[record.id] += 1
                        else:
                            problems.append(f"complete of {record.id} refused")
        except BaseException as exc:  # reported by the main thread
            with lock:
                problems.append(f"thread {index} crashed: {exc!r}")

    pool = [threading.Thread(target=claimer, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    start.wait()
    # Enqueue the second half while the claimers run: enqueue races claim too.
    storage.enqueue(batch[jobs // 2 :])
    all_in.set()
    for thread in pool:
        thread.join(120)
    assert not any(thread.is_alive() for thread in pool), "a claimer thread hung"
    assert not problems, "\n".join(problems[:20])
    ids = {job.id for job in batch}
    twice = [job_id for job_id, n in completed.items() if n != 1]
    assert not twice, f"completed more than once: {twice[:10]}"
    assert set(completed) == ids, f"lost jobs: {sorted(ids - set(completed))[:10]}"
    _assert_drained(storage, worker, ids)


def _process_claimer(
    factory: StorageFactory, worker: str, jobs: int, index: int, start: Any, results: Any
) -> None:
    """Child process body: open its own storage, wait for the others, claim until dry."""
    claimed: list[tuple[str, int]] = []
    completed: list[tuple[str, bool]] = []
    error = None
    try:
        storage = factory()
        try:
            start.wait(120)
            idle = 0
            budget = 4 * jobs
            while idle < 3 and budget > 0:
                budget -= 1
                token = f"p{index}-{uuid.uuid4().hex}"
                got = storage.claim(
                    worker,
                    1 + index % 3,
                    now=NOW,
                    owner=f"process-{index}",
                    token=token,
                    lease_until=NOW + LEASE,
                )
                if not got:
                    idle += 1
                    time.sleep(0.01)
                    continue
                idle = 0
                for record in got:
                    claimed.append((record.id, record.attempt))
                    completed.append((record.id, storage.complete(record.id, token)))
        finally:
            storage.close()
    except BaseException as exc:
        error = repr(exc)
    results.put((index, claimed, completed, error))


def race_processes(factory: StorageFactory, *, processes: int = 3, jobs: int = 150) -> None:
    """Separate OS processes (``spawn``), each with its own storage object over one store."""
    try:
        pickle.dumps(factory)
    except Exception as exc:
        raise AssertionError(
            "the backend declares MULTI_PROCESS, so the suite starts claimers in new "
            "processes and needs a picklable storage factory: return a module-level "
            "function, the storage class, or functools.partial(MyStorage, location) "
            f"from make_storage ({exc!r})"
        ) from exc
    tag = uuid.uuid4().hex[:8]
    worker = f"race.processes.{tag}"
    batch = _jobs(worker, jobs, tag)
    storage = factory()
    try:
        storage.enqueue(batch)
        context = multiprocessing.get_context("spawn")
        start = context.Barrier(processes)
        results = context.Queue()
        children = [
            context.Process(
                target=_process_claimer,
                args=(factory, worker, jobs, i, start, results),
                daemon=True,
            )
            for i in range(processes)
        ]
        for child in children:
            child.start()
        reports = [results.get(timeout=180) for _ in children]
        for child in children:
            child.join(30)
        errors = [f"process {i}: {error}" for i, _, _, error in reports if error]
        assert not errors, "a claimer process failed:\n" + "\n".join(errors)
        claims = Counter(job_id for _, claimed, _, _ in reports for job_id, _ in claimed)
        twice = [job_id for job_id, n in claims.items() if n > 1]
        assert not twice, f"claimed by two processes while the first lease was held: {twice[:10]}"
        attempts = [(job_id, n) for _, claimed, _, _ in reports for job_id, n in claimed if n != 1]
        assert not attempts, f"first claims with attempt != 1: {attempts[:10]}"
        refused = [job_id for _, _, done, _ in reports for job_id, ok in done if not ok]
        assert not refused, f"complete refused to the only holder: {refused[:10]}"
        ids = {job.id for job in batch}
        assert set(claims) == ids, f"never claimed: {sorted(ids - set(claims))[:10]}"
        _assert_drained(storage, worker, ids)
    finally:
        storage.close()
