"""Area: priority. Which runnable job a claim takes first (capability PRIORITY).

Rules (:meth:`Storage.claim` and "Ordering" in the ``exqueue.storage`` module
docstring): claims take runnable jobs by ``(priority, run_at, seq)``: a lower
priority number first (negative numbers and the int32 bounds included), equal
priorities by the earliest ``run_at``, then the earliest enqueued. A job that
becomes due or is enqueued later with a lower number goes ahead of jobs already
waiting. A serial worker type ignores priority: it only ever runs its head.
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
from exqueue.storage import PRIORITY, PRIORITY_MAX, PRIORITY_MIN, Storage

AREA = "priority"

ORDER_RULE = (
    "claims take runnable jobs by (priority, run_at, seq): lower priority first, "
    "then the earliest run_at, then the earliest enqueued"
)


def _drain_one_by_one(storage: Storage, worker: str, now: float) -> list[str]:
    order: list[str] = []
    while taken := claim(storage, worker, 1, now=now):
        order.extend(ids(taken))
    return order


def check_priority_order(factory: StorageFactory, settings: Settings) -> None:
    """PRIORITY: claims take runnable jobs by (priority, run_at, seq), int32 bounds included."""
    with opened(factory) as (_, storage):
        # Enqueue order is not the expected claim order: seq ties come last.
        plan = [
            ("p5-early", 5, NOW - 9.0),
            ("p0-mid", 0, NOW - 1.0),
            ("p0-mid-later-seq", 0, NOW - 1.0),
            ("p0-earliest", 0, NOW - 3.0),  # enqueued after p0-mid, yet runs before it
            ("p-1", -1, NOW),
            ("max", PRIORITY_MAX, NOW - 100.0),
            ("min", PRIORITY_MIN, NOW),
            ("p-1-scheduled", -1, NOW + 5.0),  # not due: not taken
            ("p0-mid-last", 0, NOW - 1.0),
        ]
        expected = [
            "min",
            "p-1",
            "p0-earliest",
            "p0-mid",
            "p0-mid-later-seq",
            "p0-mid-last",
            "p5-early",
            "max",
        ]
        at_once, one_by_one = unique("prio-all"), unique("prio-one")
        for worker in (at_once, one_by_one):
            storage.enqueue(
                [job(f"{name}@{worker}", worker, run_at=at, priority=p) for name, p, at in plan]
            )
        for worker in (at_once, one_by_one):
            for name, p, _ in plan:
                stored = got(storage, f"{name}@{worker}").priority
                expect(stored == p, "a job's priority is stored exactly", f"{name}: {stored}")
        taken = [i.split("@")[0] for i in ids(claim(storage, at_once, 20))]
        expect(taken == expected, ORDER_RULE, f"one claim of 20 took {taken}")
        taken = [i.split("@")[0] for i in _drain_one_by_one(storage, one_by_one, NOW)]
        expect(taken == expected, ORDER_RULE, f"claims of 1 took {taken}")


def check_priority_newcomers(factory: StorageFactory, settings: Settings) -> None:
    """PRIORITY: a job enqueued, retried or becoming due later with a lower number goes first."""
    with opened(factory) as (_, storage):
        worker = unique("prio-late")
        storage.enqueue([job(f"w{n}", worker, run_at=NOW - 10.0, priority=3) for n in range(4)])
        first = ids(claim(storage, worker, 1, now=NOW))
        expect(first == ["w0"], ORDER_RULE, f"took {first}")
        # Due later, higher priority: once due it goes before the older waiting ones.
        storage.enqueue([job("soon-urgent", worker, run_at=NOW + 5.0, priority=-7)])
        storage.enqueue([job("now-urgent", worker, run_at=NOW, priority=1)])
        taken = ids(claim(storage, worker, 1, now=NOW))
        expect(taken == ["now-urgent"], ORDER_RULE, f"a newcomer with priority 1: took {taken}")
        taken = ids(claim(storage, worker, 2, now=NOW + 5.0))
        expect(taken == ["soon-urgent", "w1"], ORDER_RULE, f"once due: took {taken}")
        # A retried job keeps its priority and its place by run_at.
        token = unique("tok")
        storage.enqueue([job("retry-me", worker, run_at=NOW, priority=0)])
        expect(
            ids(claim(storage, worker, 1, now=NOW + 5.0, token=token)) == ["retry-me"], ORDER_RULE
        )
        storage.schedule_retry("retry-me", token, run_at=NOW + 6.0, error="again")
        expect(got(storage, "retry-me").priority == 0, "a retried job keeps its priority")
        taken = ids(claim(storage, worker, 5, now=NOW + 6.0))
        expect(taken == ["retry-me", "w2", "w3"], ORDER_RULE, f"after a retry: took {taken}")


def check_serial_ignores_priority(factory: StorageFactory, settings: Settings) -> None:
    """PRIORITY: a serial worker type runs its head (lowest seq), whatever the priorities."""
    with opened(factory) as (_, storage):
        worker = unique("prio-serial")
        storage.enqueue(
            [
                job("s-first", worker, priority=10),
                job("s-urgent", worker, priority=-10),
                job("s-min", worker, priority=PRIORITY_MIN),
            ]
        )
        rule = "a serial worker type ignores priority: it runs only its head, in enqueue order"
        order = []
        for _ in range(3):
            token = unique("tok")
            taken = claim(storage, worker, 3, token=token, serial=True)
            order.extend(ids(taken))
            for record in taken:
                storage.complete(record.id, token)
        expect(order == ["s-first", "s-urgent", "s-min"], rule, f"ran {order}")


CHECKS = [
    Check("priority_order", PRIORITY, check_priority_order, AREA),
    Check("priority_newcomers", PRIORITY, check_priority_newcomers, AREA),
    Check("serial_ignores_priority", PRIORITY, check_serial_ignores_priority, AREA),
]
