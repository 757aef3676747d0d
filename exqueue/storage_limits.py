"""The storage protocol for cluster-wide limits and pause (issue 15), re-exported by
:mod:`exqueue.storage`.

A worker type may bound its claims across every node: at most ``concurrency``
jobs running at once, at most ``rate`` starts in any window of ``per`` seconds,
each per ``partition`` value when the bounds are partitioned (a customer, an API
key). The core computes a job's partition at enqueue and stores it with the job
(:attr:`NewJob.partition <exqueue.storage.NewJob.partition>`); the runtime claims
a limited type with :meth:`SupportsLimits.claim_limited` and every other type with
``Storage.claim``, so unlimited types pay nothing.

A *slot* is a running job: the running count of a worker (and partition) is the
number of its ``running`` jobs. So every transition out of ``running``
(complete, schedule_retry, bury, release, cancel, snooze, and ``recover`` of an
expired lease) frees the slot in the same atomic step, and a process killed with
``-9`` gives its slots back when its leases are recovered. A running job whose
lease expired but is not yet recovered still holds its slot.

The rate window counts claims (starts) over ``(now - per, now]``, including
claims whose jobs have since finished, failed or been recovered. A limited job
waits: it is not claimed, and spends no attempt.

Pause (capability :data:`PAUSE`) is cluster-wide and, on a persistent backend,
survives a reopen: ``claim`` and ``claim_limited`` return ``[]`` for a paused
worker type, checked inside the claim's own atomic step; running jobs are left
to finish.

``serial=True`` (``Storage.claim``) stays the ordered, blocking special case and
is never combined with limits (the core refuses the combination).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

if TYPE_CHECKING:
    from exqueue.storage import JobRecord

#: Implements :class:`SupportsLimits`: claims bounded by :class:`Limits`, atomically.
LIMITS: Final = "limits"
#: Implements :class:`SupportsPause`: paused worker types are never claimed.
PAUSE: Final = "pause"
#: The most UTF-8 bytes of a stored partition key (longer keys are hashed by the core).
PARTITION_KEY_LIMIT: Final = 255


@dataclass(frozen=True, slots=True)
class Limits:
    """Cluster-wide bounds on one worker type's claims."""

    #: At most this many running jobs of the type across all nodes (per partition when
    #: ``partitioned``); None: no bound.
    concurrency: int | None = None
    #: At most ``rate`` claims (starts) in any window of ``per`` seconds (a sliding window:
    #: counted over ``(now - per, now]``), per partition when ``partitioned``; None: no bound.
    rate: int | None = None
    per: float | None = None
    #: The bounds apply to each ``partition`` value separately (jobs with partition None share
    #: one bucket).
    partitioned: bool = False


@dataclass(frozen=True, slots=True)
class LimitedClaim:
    """One claim batch of a limited worker type (see ``Storage.claim`` for the shared fields)."""

    worker: str
    limit: int
    now: float
    owner: str
    token: str
    lease_until: float
    limits: Limits


@runtime_checkable
class SupportsLimits(Protocol):
    """Optional capability :data:`LIMITS`: claims bounded cluster-wide (see the module
    docstring)."""

    def claim_limited(self, request: LimitedClaim) -> list[JobRecord]:
        """As ``claim`` (priority, run_at, seq order; expiry; pause), but never lets the
        running count of the worker (per partition) exceed ``limits.concurrency``, nor the
        starts within ``(now - per, now]`` exceed ``limits.rate``; a job of a full partition
        is skipped and jobs of other partitions behind it may be claimed. The bound check and
        the claim are one atomic step across all processes. A limited job waits; it does not
        spend an attempt. Records one start per claimed job (time ``now``) for the rate window;
        starts older than ``now - per`` may be pruned."""
        ...


@runtime_checkable
class SupportsPause(Protocol):
    """Optional capability :data:`PAUSE`: worker types paused cluster-wide."""

    def pause(self, worker: str, paused: bool) -> None:
        """Set whether ``worker`` is paused (``claim`` and ``claim_limited`` then return ``[]``
        for it). Idempotent; a worker with no jobs may be paused."""
        ...

    def paused(self) -> frozenset[str]:
        """The names of the paused worker types."""
        ...
