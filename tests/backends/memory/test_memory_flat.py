"""Issue 13 item 17: MemoryStorage's indexes follow the jobs stored now, not every
job ever enqueued (its memory stays flat over a long run)."""

from __future__ import annotations

from exqueue.storage import NewJob
from exqueue_memory import MemoryStorage


def index_entries(storage: MemoryStorage) -> int:
    # The claim heaps (scheduled, ready, lapsed) count as one index: together they
    # hold each waiting job about once.
    claim_heaps = [storage._scheduled, storage._ready, storage._lapsed]
    by_worker: dict[str, int] = {}
    for index in claim_heaps:
        for worker, heap in index.items():
            by_worker[worker] = by_worker.get(worker, 0) + len(heap)
    order = storage._order
    return (
        sum(by_worker.values())
        + sum(len(heap) for heap in order.values())
        + len(by_worker)
        + len(order)
    )


def cycle(storage: MemoryStorage, worker: str, number: int, serial: bool) -> None:
    """Enqueue a batch, retry some, delete one, requeue a dead one, complete the rest."""
    ids = [f"{worker}-{number}-{n}" for n in range(50)]
    storage.enqueue([NewJob(job_id, worker, b"p", 0.0, 0.0, 3) for job_id in ids])
    assert storage.delete(ids[0]) == "deleted"
    now = float(number)
    while True:
        claimed = storage.claim(
            worker, 50, now=now, owner="n", token="t", lease_until=now + 30, serial=serial
        )
        if not claimed:
            break
        for job in claimed:
            if job.attempt == 1 and job.id.endswith("7"):
                storage.schedule_retry(job.id, "t", run_at=now, error="again")
            elif job.id.endswith("9"):
                storage.bury(job.id, "t", error="dead")
                storage.requeue(job.id, job.id + "r", now=now)
            else:
                storage.complete_many([(job.id, "t")])


def test_indexes_stay_flat_over_many_jobs() -> None:
    storage = MemoryStorage()
    sizes = []
    for number in range(200):
        cycle(storage, "plain", number, serial=False)
        cycle(storage, "serial", number, serial=True)
        cycle(storage, f"once-{number}", number, serial=False)  # a name seen once only
        sizes.append(index_entries(storage))
    assert storage.list_jobs() == []
    # 30,000 jobs passed through; nothing is stored, so nothing is indexed.
    assert storage._jobs == {}
    assert sizes[-1] == 0
    assert max(sizes) == 0


def test_indexes_stay_near_the_live_jobs_while_some_wait() -> None:
    storage = MemoryStorage()
    storage.enqueue([NewJob(f"later-{n}", "plain", b"p", 1e9, 0.0, 3) for n in range(100)])
    for number in range(200):
        cycle(storage, "plain", number, serial=False)
        cycle(storage, "serial", number, serial=True)
    assert len(storage.list_jobs(limit=1000)) == 100
    assert index_entries(storage) <= 2 * (2 * 100 + 64) + 2  # the waiting 100, plus slack
    claimed = storage.claim("plain", 1000, now=2e9, owner="n", token="t", lease_until=3e9)
    assert sorted(job.id for job in claimed) == sorted(f"later-{n}" for n in range(100))
