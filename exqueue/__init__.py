"""exqueue: simple, reliable, deterministic background jobs with pluggable storage.

A job is persisted before it runs; success removes it; failure retries it with
the worker type's backoff; when retries run out it is kept as *dead* until a
person retries or deletes it. Delivery is at-least-once.
"""

from exqueue.codec import Codec, JSONCodec, PickleCodec
from exqueue.errors import (
    ConfigurationError,
    ExqueueError,
    InvalidScheduleError,
    JobCancelled,
    JobExpiredError,
    JobNotDeadError,
    JobNotFoundError,
    JobRunningError,
    JobTimeout,
    SchemaVersionError,
    SerializationError,
    Snooze,
    UnknownWorkerError,
)
from exqueue.job import Call, DuplicateJobId, Job, JobContext, JobId, current_job
from exqueue.middleware import Middleware
from exqueue.options import JobOptions, Uniqueness
from exqueue.policy import Backoff, Exponential, Fixed
from exqueue.queue import Queue, WithOptions, WorkerStats, WorkerType
from exqueue.registry import connect
from exqueue.storage import (
    Counts,
    HistoryCount,
    JobRecord,
    NewJob,
    NodeInfo,
    Recovered,
    ScheduleSettings,
    Storage,
    TypeSettings,
)

__all__ = [
    "Backoff",
    "Call",
    "Codec",
    "ConfigurationError",
    "InvalidScheduleError",
    "Counts",
    "DuplicateJobId",
    "Exponential",
    "ExqueueError",
    "Fixed",
    "JSONCodec",
    "Job",
    "JobContext",
    "JobExpiredError",
    "JobId",
    "JobNotDeadError",
    "JobNotFoundError",
    "JobOptions",
    "JobRecord",
    "JobCancelled",
    "JobRunningError",
    "HistoryCount",
    "NodeInfo",
    "Middleware",
    "JobTimeout",
    "NewJob",
    "PickleCodec",
    "Queue",
    "Recovered",
    "SchemaVersionError",
    "SerializationError",
    "Snooze",
    "Storage",
    "ScheduleSettings",
    "TypeSettings",
    "Uniqueness",
    "UnknownWorkerError",
    "WithOptions",
    "WorkerStats",
    "WorkerType",
    "connect",
    "current_job",
]
__version__ = "0.1.0"
