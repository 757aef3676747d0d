"""The bare bound with asyncio slots (``python -m benchmarks.bare redis-asyncio``).

Everything on the event loop, nothing on other threads, which is the cheapest
shape an asyncio worker can have (exqueue keeps its claims, heartbeats and
acknowledgements off the loop, so a job that blocks the loop cannot cost a
lease; this bound does not, and so it is the more generous). One pump
coroutine makes the only Redis calls: each records every success since its last
call, fenced by each job's token, and claims as many jobs as slots are free
(once a twentieth of them are, as exqueue's async lanes wait for), in one
script call on redis.asyncio. A task per job, as exqueue makes (a job's context
variables stay its own), decodes the job's JSON arguments and awaits the body.

``EXQ_BARE_SLOTS=1`` runs the jobs on ``concurrency`` long-lived tasks instead,
each taking the next claimed job from a deque: no task per job, and a job's
context variables then leak into the next one of its slot (what exqueue will not
do). It measures what a task per job costs.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import deque

import redis.asyncio

from benchmarks import bare, bodies, common

#: Claim once this share of the slots is free (exqueue's async ``CLAIM_SHARE``).
CLAIM_SHARE = 0.05


class Pump:
    """The slots' shared state and the one coroutine that talks to Redis."""

    def __init__(self, concurrency: int, client: redis.asyncio.Redis) -> None:
        self.concurrency = concurrency
        self.free = concurrency
        self.enough = max(1, int(concurrency * CLAIM_SHARE))
        self.finished: list[str] = []  # ids and tokens, in pairs
        self.woken = asyncio.Event()
        self.script = client.register_script(bare.FINISH_AND_CLAIM_MANY)

    def done(self, job_id: str, token: str) -> None:
        self.finished.append(job_id)
        self.finished.append(token)
        self.free += 1
        if self.free >= self.enough or self.free == self.concurrency:
            self.woken.set()

    async def claim(self) -> tuple[str, list[bytes]]:
        """Wait for a claim's worth of free slots; record the successes, claim; the
        claim's token and its ids and payloads, flat."""
        if self.free < self.enough and self.free < self.concurrency:
            self.woken.clear()
            await self.woken.wait()
        done, self.finished = self.finished, []
        token = bare.new_token()
        lease = repr(time.time() + bare.LEASE_SECONDS)
        flat = await self.script(
            keys=[bare.READY, bare.RUNNING], args=[bare.PREFIX, self.free, token, lease, *done]
        )
        self.free -= len(flat) // 2
        if not flat and self.free == self.concurrency:
            await asyncio.sleep(bare.IDLE_POLL)
        return token, flat


async def task_per_job(pump: Pump, stop: threading.Event) -> None:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def job(job_id: str, token: str, raw: bytes) -> None:
        args, kwargs = json.loads(raw)
        await bodies.arun(*args, **kwargs)
        pump.done(job_id, token)

    while not stop.is_set():
        token, flat = await pump.claim()
        for i in range(0, len(flat), 2):
            task = asyncio.Task(job(flat[i].decode(), token, flat[i + 1]), loop=loop)
            tasks.add(task)
            task.add_done_callback(tasks.discard)


async def long_lived_slots(pump: Pump, stop: threading.Event) -> None:
    loop = asyncio.get_running_loop()
    waiting: deque[tuple[str, str, bytes]] = deque()
    parked: list[asyncio.Future[None]] = []

    async def slot() -> None:
        while True:
            while not waiting:
                parked.append(loop.create_future())
                await parked[-1]
            job_id, token, raw = waiting.popleft()
            args, kwargs = json.loads(raw)
            await bodies.arun(*args, **kwargs)
            pump.done(job_id, token)

    slots = [asyncio.Task(slot(), loop=loop) for _ in range(pump.concurrency)]
    while not stop.is_set():
        token, flat = await pump.claim()
        for i in range(0, len(flat), 2):
            waiting.append((flat[i].decode(), token, flat[i + 1]))
        while parked and waiting:
            parked.pop().set_result(None)
    for task in slots:
        task.cancel()


async def run(concurrency: int, stop: threading.Event, pool: int) -> None:
    client = redis.asyncio.Redis(
        host=common.REDIS_HOST, port=common.REDIS_PORT, db=common.REDIS_DB, max_connections=pool
    )
    pump = Pump(concurrency, client)
    if os.environ.get("EXQ_BARE_SLOTS"):
        await long_lived_slots(pump, stop)
    else:
        await task_per_job(pump, stop)
    await client.aclose()
