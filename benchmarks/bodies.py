"""The three job bodies every benchmarked library runs, picked by ``$EXQ_BENCH_BODY``.

- ``noop``: nothing (the library's own cost per job).
- ``incr``: one round trip to Redis, ``INCR`` on the job's own connection (one
  connection per thread; for asyncio, a pool that hands each running job its own).
- ``sleep``: 10 ms of waiting (``time.sleep`` or ``asyncio.sleep``), so
  concurrency / 10 ms is the physical limit.
- ``cpu`` (``benchmarks.scaling`` only, not in the like-for-like matrix): a fixed
  amount of pure-Python arithmetic (``CPU_LOOPS`` iterations, about 1 ms here),
  which holds the GIL: what more processes, not more threads, speed up.

Each body ends with ``counter.hit`` given the job's start, which is how every
run counts its jobs and times them. The ``incr`` total in Redis is checked by the
harness too.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

from benchmarks import counter
from benchmarks.common import REDIS_DB, REDIS_HOST, REDIS_PORT
from benchmarks.matrix import ENV_BODY, SLEEP_SECONDS, pool_size

BODY = os.environ.get(ENV_BODY, "noop")
INCR_KEY = "exqbench:incr"
if BODY == "incr":
    # Imported with the job's module, not inside the first job's timed run.
    import redis
    import redis.asyncio  # noqa: F401
#: Iterations of the ``cpu`` body: fixed work, not a fixed time, so more
#: processes show as more jobs per second.
CPU_LOOPS = 20_000
_local = threading.local()
_async_clients: dict[int, Any] = {}


def _client() -> Any:
    client = getattr(_local, "client", None)
    if client is None:
        import redis

        # Its own client, so its own pool holding this thread's one connection.
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
        _local.client = client
    return client


def run(n: int) -> None:
    """The body of a job run by a thread."""
    started = time.perf_counter()
    if BODY == "incr":
        _client().incr(INCR_KEY)
    elif BODY == "sleep":
        time.sleep(SLEEP_SECONDS)
    elif BODY == "cpu":
        total = 0
        for i in range(CPU_LOOPS):
            total += i * i
    counter.hit(n, started)


def _async_client() -> Any:
    loop = id(asyncio.get_running_loop())
    client = _async_clients.get(loop)
    if client is None:
        import redis.asyncio

        # A command takes a free connection from the pool (or opens one), so
        # each job in flight has its own, as a thread's job does.
        client = redis.asyncio.Redis(
            host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, max_connections=pool_size()
        )
        _async_clients[loop] = client
    return client


async def arun(n: int) -> None:
    """The body of a job run by an asyncio task."""
    started = time.perf_counter()
    if BODY == "incr":
        await _async_client().incr(INCR_KEY)
    elif BODY == "sleep":
        await asyncio.sleep(SLEEP_SECONDS)
    counter.hit(n, started)
