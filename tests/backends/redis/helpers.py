"""Small builders the Redis storage tests share: a job and a claim that returns ids."""

from __future__ import annotations

from typing import Any

from exqueue.storage import NewJob, Storage


def job(job_id: str, worker: str = "w", run_at: float = 0.0, **kw: Any) -> NewJob:
    fields: dict[str, Any] = {"payload": b"p", "enqueued_at": 0.0, "max_attempts": 3}
    fields.update(kw)
    return NewJob(id=job_id, worker=worker, run_at=run_at, **fields)


def claim(storage: Storage, worker: str = "w", limit: int = 10, now: float = 100.0,
          token: str = "t1", serial: bool = False, owner: str = "node") -> list[str]:  # fmt: skip
    records = storage.claim(
        worker, limit, now=now, owner=owner, token=token, lease_until=now + 30, serial=serial
    )
    return [record.id for record in records]
