"""Public job values: the ``Job`` a caller reads, a ``Call`` to enqueue, the current job."""

from __future__ import annotations

import contextvars
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from exqueue.codec import Codec
from exqueue.errors import SerializationError
from exqueue.storage import JobRecord, JobState


def _utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)


@dataclass(frozen=True)
class Job:
    """A stored job as a caller sees it. ``errors`` is oldest first.

    ``payload_error`` is set when the stored arguments cannot be decoded (``args``
    and ``kwargs`` are then empty); such a job dies when a worker picks it up.
    """

    id: str
    worker: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: JobState
    attempt: int
    max_attempts: int
    run_at: dt.datetime
    enqueued_at: dt.datetime
    errors: tuple[str, ...]
    payload_error: str | None = None

    @property
    def last_error(self) -> str | None:
        return self.errors[-1] if self.errors else None

    @classmethod
    def from_record(cls, record: JobRecord, codec: Codec) -> Job:
        payload_error = None
        try:
            args, kwargs = codec.decode(record.payload)
            args, kwargs = tuple(args), dict(kwargs)
        except SerializationError as exc:
            args, kwargs, payload_error = (), {}, str(exc)
        except Exception as exc:  # any codec, any crafted payload: one job, not the listing
            args, kwargs, payload_error = (), {}, f"cannot decode payload: {exc!r}"
        return cls(
            id=record.id,
            worker=record.worker,
            args=args,
            kwargs=kwargs,
            state=record.state,
            attempt=record.attempt,
            max_attempts=record.max_attempts,
            run_at=_utc(record.run_at),
            enqueued_at=_utc(record.enqueued_at),
            errors=record.errors,
            payload_error=payload_error,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (arguments as ``repr`` strings)."""
        return {
            "id": self.id,
            "worker": self.worker,
            "args": [repr(a) for a in self.args],
            "kwargs": {k: repr(v) for k, v in self.kwargs.items()},
            "state": self.state,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "run_at": self.run_at.isoformat(),
            "enqueued_at": self.enqueued_at.isoformat(),
            "errors": list(self.errors),
            "last_error": self.last_error,
            "payload_error": self.payload_error,
        }


@dataclass(frozen=True)
class Call:
    """One job to enqueue: a worker name with its arguments, optionally delayed.

    ``fn.call(*args, **kwargs)`` builds one for a registered worker; build it by
    hand to enqueue for a worker that lives in another process.
    """

    worker: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    delay: float = 0.0
    run_at: float | None = None


@dataclass(frozen=True)
class JobContext:
    """What a running job may know about itself (``exqueue.current_job()``)."""

    id: str
    worker: str
    attempt: int
    max_attempts: int


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "exqueue_current_job", default=None
)


def current_job() -> JobContext | None:
    """The job running in this thread, or None outside a job."""
    return _current.get()
