"""``NewJob`` values for storage tests that call a backend directly."""

from __future__ import annotations

from typing import Any

from exqueue.storage import NewJob

#: A fixed ``now`` (epoch seconds) for tests that drive a storage's time themselves.
NOW = 1_700_000_000.0


def new_job(job_id: str, worker: str = "w", *, payload: bytes = b"x", **fields: Any) -> NewJob:
    """A job runnable at :data:`NOW` with three attempts; ``fields`` set any other field."""
    values: dict[str, Any] = {"run_at": NOW, "enqueued_at": NOW, "max_attempts": 3, **fields}
    return NewJob(id=job_id, worker=worker, payload=payload, **values)
