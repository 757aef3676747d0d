"""Awaitable enqueue and management calls, on every backend.

``await fn.aenqueue(...)`` stores the same job ``fn.enqueue(...)`` would, and
never blocks the caller's event loop: a ticker coroutine keeps running while the
enqueues are in flight.
"""

from __future__ import annotations

import asyncio

import pytest

import exqueue
from tests.support.backends import BackendHandle


def test_aenqueue_and_async_management(backend: BackendHandle) -> None:
    queue = exqueue.Queue(backend.open(), poll_interval=0.05)
    seen: list[int] = []

    @queue.worker
    async def job(n: int) -> None:
        seen.append(n)

    @queue.worker(max_retries=0)
    def fails() -> None:
        raise RuntimeError("no")

    async def handler() -> tuple[list[str], int]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        ids = [await job.aenqueue(1)]
        ids.append(await job.options(priority=3).aenqueue(2))
        ids.append(await job.aenqueue_in(0, 3))
        ids += await queue.aenqueue_many([job.call(4), fails.call()])
        record = await queue.aget(ids[1])
        assert record is not None and record.priority == 3 and record.args == (2,)
        assert len(await queue.ajobs(state="waiting")) == 5
        third = queue.storage.get(ids[2])
        assert third is not None
        assert [j.id for j in await queue.ajobs(after_seq=third.seq)] == ids[3:]
        with pytest.raises(ValueError, match="after_seq must be an int"):
            await queue.ajobs(after_seq="2")  # type: ignore[arg-type]
        stats = await queue.astats()
        assert stats[job.name].waiting == 4
        stop.set()
        await task
        return ids, ticks

    ids, ticks = asyncio.run(handler())
    assert ticks > 0  # the loop ran while enqueues were in flight
    assert queue.drain(timeout=60) == 5
    assert sorted(seen) == [1, 2, 3, 4]

    async def manage() -> None:
        new_id = await queue.aretry(ids[4])
        assert await queue.adelete(new_id)

    asyncio.run(manage())
    assert queue.storage.list_jobs(limit=10) == []
    queue.close()
