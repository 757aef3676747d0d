"""Exceptions the public API raises."""

from __future__ import annotations


class ExqueueError(Exception):
    """Base class of every exqueue error."""


class SerializationError(ExqueueError, TypeError):
    """Arguments cannot be encoded, or a stored payload cannot be decoded."""


class UnknownWorkerError(ExqueueError, LookupError):
    """A worker name that this queue has not registered was asked for."""


class JobNotFoundError(ExqueueError, LookupError):
    """No job has this id."""


class JobRunningError(ExqueueError):
    """The job is running: it cannot be deleted until it finishes or its lease is lost."""


class JobNotDeadError(ExqueueError):
    """Only a dead job can be retried by hand."""


class ConfigurationError(ExqueueError, ValueError):
    """A bad storage URL, a missing driver, a bad option."""


class InvalidScheduleError(ExqueueError, ValueError):
    """A job's delay or start time is not a finite time within reach (nothing was stored)."""


class JobExpiredError(ExqueueError):
    """A job was not started before its ``expires_at``: it is dead, never run.

    The dead reporters (``queue.on_dead``) get one for each expired job."""


class SchemaVersionError(ConfigurationError):
    """The stored schema version does not match this version of exqueue."""


class JobCancelled(ExqueueError):
    """Raised in a running job (task cancelled, or raised in its thread) that was cancelled."""


class Snooze(ExqueueError):
    """Raise (or return) it from a job to run the job again ``seconds`` from now.

    The attempt is not spent; a job may snooze ``max_snoozes`` times (a Queue
    option), after which a snooze counts as a failure.
    """

    def __init__(self, seconds: float) -> None:
        from exqueue.guards import check_seconds

        self.seconds = check_seconds("Snooze seconds", seconds)
        super().__init__(f"snoozed for {self.seconds:g} s")


class JobTimeout(ExqueueError):
    """Raised in a job (task cancelled, or raised in its thread) that ran past its timeout."""
