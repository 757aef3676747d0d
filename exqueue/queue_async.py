"""The awaitable half of the public ``Queue``: ``aenqueue_many`` and async management calls.

:class:`AsyncMethods` is a base class of :class:`exqueue.Queue`. Each method is
the sync one run so that the caller's event loop is never blocked (a FastAPI or
aiohttp handler stays responsive): on a backend with a native async driver
(capability ``async_enqueue``) enqueues go through it; every other call hops to
a worker thread (``asyncio.to_thread``), which every backend supports since
backends are shared by threads already.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

from exqueue.storage import ASYNC_ENQUEUE, SupportsAsyncEnqueue

if TYPE_CHECKING:
    from exqueue.job import Call, Job, JobId
    from exqueue.queue import Queue, WorkerStats
    from exqueue.storage import CancelResult, JobState


class AsyncMethods:
    """``await queue.aenqueue_many(...)``, ``await queue.aget(id)`` and the like."""

    @property
    def _queue(self) -> Queue:
        """This object as the :class:`~exqueue.Queue` it is always a base of (which mypy
        cannot know of a base class): one cast here instead of one in every method."""
        return cast("Queue", self)

    async def aenqueue_many(
        self, calls: Iterable[Call], *, allow_unknown: bool = False
    ) -> list[JobId]:
        """:meth:`Queue.enqueue_many` without blocking the event loop."""
        queue = self._queue
        storage = queue.storage
        if ASYNC_ENQUEUE not in storage.capabilities or not isinstance(
            storage, SupportsAsyncEnqueue
        ):
            batch = list(calls)  # a generator is consumed here, not on another thread
            return await asyncio.to_thread(queue.enqueue_many, batch, allow_unknown=allow_unknown)
        new_jobs = queue._new_jobs(calls, allow_unknown)
        held = await storage.aenqueue(new_jobs)
        runtime = queue._runtime
        if runtime is not None:
            runtime.wake()
        return queue._job_ids(new_jobs, held)

    async def aget(self, job_id: str) -> Job | None:
        return await asyncio.to_thread(self._queue.get, job_id)

    async def ajobs(
        self,
        state: JobState | None = None,
        worker: str | None = None,
        limit: int = 100,
        *,
        tag: tuple[str, str] | None = None,
        after_seq: int | None = None,
    ) -> list[Job]:
        return await asyncio.to_thread(
            self._queue.jobs, state, worker, limit, tag=tag, after_seq=after_seq
        )

    async def aretry(self, job_id: str) -> str:
        return await asyncio.to_thread(self._queue.retry, job_id)

    async def adelete(self, job_id: str) -> bool:
        return await asyncio.to_thread(self._queue.delete, job_id)

    async def acancel(self, job_id: str, *, delete: bool = False) -> CancelResult:
        return await asyncio.to_thread(self._queue.cancel, job_id, delete=delete)

    async def astats(self) -> dict[str, WorkerStats]:
        return await asyncio.to_thread(self._queue.stats)
