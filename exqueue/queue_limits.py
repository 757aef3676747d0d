"""The limits half of the public ``Queue``: pause and resume, and partition keys at enqueue.

:class:`LimitMethods` is a base class of :class:`exqueue.Queue`. Pausing is
cluster-wide and stored (capability ``PAUSE``): no node claims a paused type's
jobs, running ones finish. A partitioned worker type's jobs get their key from
:func:`with_partition`, which ``Queue`` calls at enqueue on the job it built (so
this module needs no view of how ``Queue`` builds jobs; see :mod:`exqueue.limits`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from exqueue.errors import ConfigurationError
from exqueue.guards import check_worker_name
from exqueue.limits import partition_of
from exqueue.storage import PAUSE, NewJob, Storage, SupportsPause

if TYPE_CHECKING:
    from exqueue.queue import WorkerType
    from exqueue.runtime import Runtime


class LimitMethods:
    """Pause and resume of :class:`exqueue.Queue` (a base class of it)."""

    storage: Storage
    _runtime: Runtime | None

    def _pauser(self) -> SupportsPause:
        storage = self.storage
        if PAUSE not in storage.capabilities or not isinstance(storage, SupportsPause):
            raise ConfigurationError(
                f"pausing a worker type needs the storage capability {PAUSE!r}, which "
                f"{type(storage).__name__} does not declare"
            )
        return storage

    def pause(self, worker: str) -> None:
        """Stop every node claiming ``worker``'s jobs (its running jobs finish). Idempotent.

        ``worker`` may be any worker name, registered here or not.
        """
        self._pauser().pause(check_worker_name(worker), True)

    def resume(self, worker: str) -> None:
        """Let nodes claim ``worker``'s jobs again. Idempotent."""
        self._pauser().pause(check_worker_name(worker), False)
        runtime = self._runtime
        if runtime is not None:
            runtime.wake()  # this node may claim at once

    def paused(self) -> frozenset[str]:
        """The paused worker types (empty when the storage cannot pause)."""
        storage = self.storage
        if PAUSE not in storage.capabilities or not isinstance(storage, SupportsPause):
            return frozenset()
        return frozenset(storage.paused())


def with_partition(
    worker_type: WorkerType[Any, Any],
    job: NewJob,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> NewJob:
    """``job``, a new job of a partitioned type built from ``args`` and ``kwargs``, with its
    partition key (or stored dead: why not)."""
    limits = worker_type.limits
    assert limits is not None and limits.partition is not None
    partition, dead_error = partition_of(
        worker_type.fn, worker_type.name, limits.partition, args, kwargs
    )
    if dead_error is not None:
        # Dead at once, with the reason, holding no unique key: never stuck, never lost.
        return replace(job, unique=None, dead_error=dead_error)
    return replace(job, partition=partition)
