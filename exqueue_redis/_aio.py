"""RedisStorage's native async enqueue (capability ``ASYNC_ENQUEUE``): redis.asyncio.

The same ``ENQUEUE`` script as :meth:`RedisStorage.enqueue`, sent through a
``redis.asyncio`` client, one per event loop (an asyncio connection belongs to
the loop that opened it), made from the storage's URL. A storage built on a
client the caller passed in, or on a Cluster, has no URL of its own to open an
async client with: it enqueues on a worker thread instead (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import Any

from exqueue.storage import NewJob
from exqueue_redis import _scripts
from exqueue_redis._prelude import prelude_for
from exqueue_redis._records import _enqueue_args


class RedisAsyncEnqueue:
    """The ``aenqueue`` of ``RedisStorage`` (a base class of it)."""

    _url: str
    _prefix: str
    _direct: bool
    _owns_client: bool

    def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        raise NotImplementedError

    def _async_clients(self) -> weakref.WeakKeyDictionary[Any, tuple[Any, Any]]:
        clients: weakref.WeakKeyDictionary[Any, tuple[Any, Any]] = self.__dict__.setdefault(
            "_aio_clients", weakref.WeakKeyDictionary()
        )
        return clients

    async def aenqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        if not jobs:
            return []
        if not (self._direct and self._owns_client):
            return await asyncio.to_thread(self.enqueue, jobs)
        loop = asyncio.get_running_loop()
        clients = self._async_clients()
        found = clients.get(loop)
        if found is None:
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(self._url)
            body = _scripts.ENQUEUE
            found = (client, client.register_script(prelude_for(body) + body))
            clients[loop] = found
        _, script = found
        args: list[bytes | str | int | float] = [len(jobs)]
        for job in jobs:
            args.extend(_enqueue_args(job))
        outcome, held = await script(keys=[self._prefix], args=args)
        if outcome == b"dup":
            raise ValueError(
                f"duplicate job id {held.decode()!r} in enqueue batch; nothing was enqueued"
            )
        return [holder.decode() for holder in held]
