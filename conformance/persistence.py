"""Area: persistence. What survives close-and-reopen, and what other storage objects see.

Rules (capabilities ``persistent`` and ``multi_process``): a new storage object
over the same location sees every job with every field, lease and ``seq``; a
held lease still works and a lost one stays lost; new jobs get larger ``seq``.
When several processes share a store, each storage object answers from the
store itself: a change made through one object is seen at once by ``get``,
``list_jobs`` and ``counts`` of another (no stale cache).
"""

from __future__ import annotations

from hypothesis import settings as Settings

from conformance.base import (
    NOW,
    Check,
    StorageFactory,
    claim,
    expect,
    got,
    ids,
    job,
    opened,
    unique,
)
from exqueue.storage import (
    DEAD,
    MULTI_PROCESS,
    PERSISTENT,
    RUNNING,
    WAITING,
    WORKER_LOST,
    Counts,
)

AREA = "persistence"


def check_reopen_keeps_everything(factory: StorageFactory, settings: Settings) -> None:
    """PERSISTENT: a new storage object over the same data sees every field and lease."""
    with opened(factory) as (session, storage):
        worker = unique("reopen")
        storage.enqueue([job(f"r-{n}", worker, bytes([n]) * n, NOW + (n % 3)) for n in range(9)])
        now = NOW + 5
        running = claim(storage, worker, 4, now=now, owner="node-ø", token="held")
        expect(len(running) == 4, "claim takes four runnable jobs", ids(running))
        storage.schedule_retry(running[0].id, "held", run_at=now + 30, error="first ✗\n2")
        storage.bury(running[1].id, "held", error="fatal ✗")
        storage.requeue(running[1].id, "r-requeued", now=now)
        storage.bury(running[3].id, "held", error="dead and staying dead ✗")
        second = claim(
            storage, worker, 1, now=now, owner="node-ø", token="lost", lease_until=now + 1
        )
        back = storage.recover(now + 1, error=WORKER_LOST)
        expect(back.waiting == tuple(ids(second)), "recover takes back the expired lease", back)
        before = storage.list_jobs(limit=100)
        counts = storage.counts(now)
        storage = session.reopen()
        after = storage.list_jobs(limit=100)
        rule = "every job, field, lease and seq survives close and reopen"
        changed = [(a, b) for a, b in zip(before, after, strict=False) if a != b]
        expect(
            after == before, rule, changed[:2] or f"{len(before)} jobs before, {len(after)} after"
        )
        expect(storage.counts(now) == counts, rule, "counts changed")
        expect({r.state for r in after} >= {WAITING, RUNNING}, rule, "states changed")
        expect(storage.complete(running[2].id, "held"), "a held lease survives a reopen")
        expect(not storage.complete(second[0].id, "lost"), "a lost lease stays lost after a reopen")
        storage.enqueue([job("r-after", worker)])
        newest = got(storage, "r-after")
        expect(
            newest.seq > max(r.seq for r in after),
            "a job enqueued after a reopen gets a larger seq than every earlier job",
            newest.seq,
        )
        dead = ids(storage.list_jobs(state=DEAD, worker=worker))
        expect(dead == [running[3].id], "dead jobs survive a reopen", dead)


def check_second_object_sees_changes(factory: StorageFactory, settings: Settings) -> None:
    """MULTI_PROCESS: a change through one storage object is seen at once through another."""
    with opened(factory) as (_, first):
        second = factory()
        try:
            worker = unique("shared")
            rule = (
                "get, list_jobs and counts answer from the shared store: a change made "
                "through another storage object (another process) is seen at once"
            )

            def same(step: str) -> None:
                for job_id in ("s-1", "s-2", "s-new"):
                    expect(
                        second.get(job_id) == first.get(job_id), rule, f"{step}: get({job_id!r})"
                    )
                expect(
                    second.list_jobs(worker=worker) == first.list_jobs(worker=worker),
                    rule,
                    f"{step}: list_jobs",
                )
                expect(second.counts(NOW) == first.counts(NOW), rule, f"{step}: counts")

            same("empty")
            first.enqueue([job("s-1", worker), job("s-2", worker, max_attempts=1)])
            same("after enqueue")
            claim(first, worker, 2, token="t")
            same("after claim")
            first.schedule_retry("s-1", "t", run_at=NOW + 1, error="e")
            first.bury("s-2", "t", error="dead")
            same("after retry and bury")
            first.requeue("s-2", "s-new", now=NOW + 2)
            same("after requeue")
            taken = claim(second, worker, 2, now=NOW + 2, token="u")
            expect(
                len(taken) == 2, "a job requeued through one object is claimable through another"
            )
            first.complete("s-1", "u")
            same("after complete")
            expect(second.get("s-1") is None, rule, "a completed job is still seen")
            expect(second.counts(NOW).get(worker) == Counts(running=1), rule, "counts")
        finally:
            second.close()


CHECKS = [
    Check("reopen_keeps_everything", PERSISTENT, check_reopen_keeps_everything, AREA),
    Check("second_object_sees_changes", MULTI_PROCESS, check_second_object_sees_changes, AREA),
]
