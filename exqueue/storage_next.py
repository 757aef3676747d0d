"""The storage protocol for finishing jobs and claiming the next in one call (issue 19),
re-exported by :mod:`exqueue.storage`.

A job thread (or coroutine) that has just finished a job has a free slot. With
``prefetch=0`` it needs a claim before it runs again, and on a networked store
that claim and the success it is about to write are two round trips. A backend
that declares :data:`FINISH_AND_CLAIM` takes both in one call: the successes are
written first, then the claim is made, so the claim sees the store as it is after
the successes (a serial type's next head is claimable in the same call).

The call is exactly ``complete_many(request.done, now=request.now)`` followed by
``claim(request.worker, request.limit, now=..., owner=..., token=...,
lease_until=..., serial=...)``: each part keeps its own rules (fencing, pause,
priority, expiry). The two parts need not be one atomic step, but the claim must
never be applied before the successes (a backend that claims first hands a
serial type nothing and a limited store a slot too few). The core uses it only
for worker types claimed with ``Storage.claim`` (no limits).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from exqueue.storage import JobRecord, Storage

#: Implements :class:`SupportsFinishAndClaim`: successes and the next claim in one call.
FINISH_AND_CLAIM = "finish_and_claim"
#: A hint beside :data:`FINISH_AND_CLAIM`, no method of its own: calls made at once
#: run side by side (each on its own connection, one statement each), so every job
#: thread of a lane writes its own success with the claim for its slot, as many at
#: once as the lane has threads, rather than queueing it for one writer's batch.
FINISH_IN_PARALLEL = "finish_in_parallel"


@dataclass(frozen=True, slots=True)
class FinishAndClaim:
    """One :meth:`SupportsFinishAndClaim.finish_and_claim` call: successes, then a claim.

    ``done`` are the ``(job_id, token)`` successes to record (may be empty);
    the other fields are :meth:`Storage.claim`'s arguments. ``now`` is both the
    completion time (unique periods) and the claim's ``now``.
    """

    done: Sequence[tuple[str, str]]
    worker: str
    limit: int
    now: float
    owner: str
    token: str
    lease_until: float
    serial: bool = False


@dataclass(frozen=True, slots=True)
class Finished:
    """What :meth:`SupportsFinishAndClaim.finish_and_claim` did: as ``complete_many`` and
    ``claim`` return."""

    #: The ids of ``done`` that were completed (held with their token), in order.
    completed: list[str]
    #: The claimed records as they are after the claim, in claim order.
    claimed: list[JobRecord]


@runtime_checkable
class SupportsFinishAndClaim(Protocol):
    """Optional capability :data:`FINISH_AND_CLAIM`: record successes and claim in one call."""

    def finish_and_claim(self, request: FinishAndClaim) -> Finished:
        """``complete_many(request.done, now=request.now)``, then ``claim(...)``."""
        ...


def claim_requested(storage: Storage, request: FinishAndClaim) -> list[JobRecord]:
    """``storage.claim`` with the claim part of ``request``: for a backend that runs
    ``finish_and_claim`` as its two parts (successes first, then this)."""
    return storage.claim(
        request.worker,
        request.limit,
        now=request.now,
        owner=request.owner,
        token=request.token,
        lease_until=request.lease_until,
        serial=request.serial,
    )
