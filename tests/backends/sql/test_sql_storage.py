"""SQLStorage rules the conformance suite does not state, on SQLite, PostgreSQL and MariaDB.

The storage contract itself (order, leases and tokens, retry and dead, recover,
delete, requeue, listing, counts, reopen) is proved on every backend by
``tests/conformance``; these tests keep what it leaves out: a requeue onto an id
that is taken, and ids compared exactly (case, accents, trailing spaces).
"""

from __future__ import annotations

from typing import Any

import pytest

from exqueue.storage import (
    DEAD,
    WAITING,
    NewJob,
    Storage,
)

SQL = ["sqlite", "postgres", "mysql"]
pytestmark = pytest.mark.parametrize("backend", SQL, indirect=True)


def job(
    job_id: str, worker: str = "w", run_at: float = 0.0, payload: bytes = b"p", tries: int = 3
) -> NewJob:
    return NewJob(job_id, worker, payload, run_at=run_at, enqueued_at=0.0, max_attempts=tries)


def claim(
    storage: Storage,
    worker: str = "w",
    limit: int = 10,
    now: float = 10.0,
    token: str = "t",
    **kw: Any,
) -> list[str]:
    got = storage.claim(
        worker, limit, now=now, owner="node", token=token, lease_until=now + 30, **kw
    )
    return [record.id for record in got]


def test_bury_makes_dead_and_requeue_keeps_seq(storage: Storage) -> None:
    storage.enqueue([job("a"), job("b")])
    claim(storage, limit=1, token="t1")
    assert storage.bury("a", "t1", error="fatal") is True
    assert storage.bury("a", "t1", error="again") is False
    dead = storage.get("a")
    assert dead is not None and dead.state == DEAD and dead.errors == ("fatal",)
    assert storage.requeue("b", "b2", now=1.0) == "not_dead"
    assert storage.requeue("nope", "x", now=1.0) == "missing"
    with pytest.raises(ValueError):
        storage.requeue("a", "b", now=1.0)  # the new id is taken
    assert storage.requeue("a", "a2", now=3.0) == "requeued"
    assert storage.get("a") is None
    again = storage.get("a2")
    assert again is not None
    assert (again.seq, again.state, again.attempt, again.errors, again.run_at) == (
        dead.seq,
        WAITING,
        0,
        (),
        3.0,
    )


def test_ids_and_names_compare_exactly(storage: Storage) -> None:
    storage.enqueue(
        [job("Job", worker="Mail"), job("job", worker="mail"), job("é", worker="mäil")]
        + [job("job ", worker="mail ")]
    )
    assert claim(storage, worker="mail") == ["job"]
    assert claim(storage, worker="mail ", token="t2") == ["job "]
    assert storage.get("JOB") is None
    record = storage.get("é")
    assert record is not None and record.worker == "mäil"
