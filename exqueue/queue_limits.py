"""The limits half of the public ``Queue``: pause and resume, and partition keys at enqueue.

:class:`LimitMethods` is a base class of :class:`exqueue.Queue`. Pausing is
cluster-wide and stored (capability ``PAUSE``): no node claims a paused type's
jobs, running ones finish. A partitioned worker type's jobs get their key here,
at enqueue (see :mod:`exqueue.limits`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from exqueue.errors import ConfigurationError
from exqueue.guards import check_worker_name
from exqueue.limits import partition_of
from exqueue.options import JobOptions
from exqueue.storage import PAUSE, NewJob, Storage, SupportsPause

if TYPE_CHECKING:
    from exqueue.queue import WorkerType
    from exqueue.runtime import Runtime


class LimitMethods:
    """Pause, resume and partitions of :class:`exqueue.Queue` (a base class of it)."""

    storage: Storage
    clock: Callable[[], float]
    _runtime: Runtime | None

    def _new_job_with_options(
        self,
        worker_type: WorkerType[Any, Any] | None,
        worker: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        run_at: float | None,
        delay: float,
        now: float,
        options: JobOptions | None,
        defaults: JobOptions | None,
    ) -> NewJob:
        raise NotImplementedError  # provided by Queue

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

    def _partitioned(
        self,
        worker_type: WorkerType[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        run_at: float | None,
        delay: float,
        now: float,
        options: JobOptions | None,
    ) -> NewJob:
        """A new job of a partitioned type, with its partition key (or stored dead: why not)."""
        limits = worker_type.limits
        assert limits is not None and limits.partition is not None
        args = args if type(args) is tuple else tuple(args)
        kwargs = kwargs if type(kwargs) is dict else dict(kwargs)
        job = self._new_job_with_options(
            worker_type,
            worker_type.name,
            args,
            kwargs,
            run_at,
            delay,
            now,
            options or JobOptions(),
            worker_type.defaults,
        )
        partition, dead_error = partition_of(
            worker_type.fn, worker_type.name, limits.partition, args, kwargs
        )
        if dead_error is not None:
            # Dead at once, with the reason, holding no unique key: never stuck, never lost.
            return replace(job, unique=None, dead_error=dead_error)
        return replace(job, partition=partition)
