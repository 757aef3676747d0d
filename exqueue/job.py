"""Public job values: the ``Job`` a caller reads, a ``Call`` to enqueue, the id an
enqueue returns (``JobId``), the current job."""

from __future__ import annotations

import contextvars
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from exqueue._frozen import cheap_init
from exqueue.codec import Codec
from exqueue.errors import SerializationError
from exqueue.storage import JobRecord, JobState

if TYPE_CHECKING:
    from exqueue.options import JobOptions


def _utc(timestamp: float) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    except (OverflowError, ValueError, OSError):  # a damaged stored time: still listable
        return (dt.datetime.max if timestamp > 0 else dt.datetime.min).replace(tzinfo=dt.UTC)


@cheap_init
@dataclass(frozen=True)
class Job:
    """A stored job as a caller sees it. ``errors`` is oldest first.

    ``errors`` holds the first error and the last ``ERRORS_KEPT`` (20);
    ``error_count`` is how many were recorded in all (see :mod:`exqueue.storage`).

    ``payload_error`` is set when the stored arguments cannot be decoded (``args``
    and ``kwargs`` are then empty); such a job dies when a worker picks it up.
    ``node`` is the node holding a running job's lease; ``started_at`` is when its
    running attempt was claimed, where the backend records it (else None).

    Protocol 2: ``priority`` (lower runs first), ``meta`` (str -> str),
    ``timeout`` (seconds one attempt may run, or None), ``expires_at`` (a job not
    started by then is never run) and ``unique_key`` (None for a job that is not
    unique). ``partition``: the limit key of a partitioned worker type (None otherwise).
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
    node: str | None = None
    started_at: dt.datetime | None = None
    error_count: int = 0
    priority: int = 0
    meta: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    expires_at: dt.datetime | None = None
    unique_key: str | None = None
    partition: str | None = None

    @property
    def last_error(self) -> str | None:
        return self.errors[-1] if self.errors else None

    @property
    def error_numbers(self) -> list[int]:
        """The number of each kept error among all recorded (1 is the first)."""
        kept, count = len(self.errors), max(self.error_count, len(self.errors))
        if kept == count:
            return list(range(1, kept + 1))
        return [1, *range(count - kept + 2, count + 1)]

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
            node=record.lease_owner if record.state == "running" else None,
            started_at=_utc(record.started_at) if record.started_at is not None else None,
            error_count=record.error_count,
            priority=record.priority,
            meta=dict(record.meta),
            timeout=record.timeout,
            expires_at=_utc(record.expires_at) if record.expires_at is not None else None,
            unique_key=record.unique_key,
            partition=record.partition,
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
            "error_count": max(self.error_count, len(self.errors)),
            "last_error": self.last_error,
            "payload_error": self.payload_error,
            "node": self.node,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "priority": self.priority,
            "meta": dict(self.meta),
            "timeout": self.timeout,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "unique_key": self.unique_key,
            "partition": self.partition,
        }


class JobId(str):
    """A job id as ``enqueue`` returns it: a ``str``, and ``duplicate`` is False.

    A unique job whose key was already held returns the holder's id as a
    :class:`DuplicateJobId` (``duplicate`` True): nothing new was stored.
    """

    __slots__ = ()
    duplicate: bool = False


class DuplicateJobId(JobId):
    """The id of the job that already held a unique key (``duplicate`` is True)."""

    __slots__ = ()
    duplicate: bool = True


@cheap_init
@dataclass(frozen=True)
class Call:
    """One job to enqueue: a worker name with its arguments, optionally delayed.

    ``fn.call(*args, **kwargs)`` builds one for a registered worker
    (``fn.options(...).call(...)`` with options); build it by hand to enqueue
    for a worker that lives in another process. ``options`` is an
    :class:`exqueue.JobOptions` (priority, unique, meta, timeout, expiry).
    """

    worker: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    delay: float = 0.0
    run_at: float | None = None
    options: JobOptions | None = None


@cheap_init
@dataclass(frozen=True)
class JobContext:
    """What a running job may know about itself (``exqueue.current_job()``).

    ``meta`` is the job's meta (trace context, tags), ``priority`` its priority.
    """

    id: str
    worker: str
    attempt: int
    max_attempts: int
    meta: Mapping[str, str] = field(default_factory=dict)
    priority: int = 0


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "exqueue_current_job", default=None
)


def current_job() -> JobContext | None:
    """The job running in this thread, or None outside a job."""
    return _current.get()
