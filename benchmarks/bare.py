"""The bare bound: the least a worker that keeps exqueue's promise can do per job.

    python -m benchmarks.bare redis|redis-asyncio|postgres

A reference row of ``python -m benchmarks.run`` (keys ``bare-redis``,
``bare-redis-asyncio``, ``bare-postgres``), started as its own process like every
library's worker, with the cell's concurrency and body. It is not a library: it
is the floor of a *queue* with exqueue's guarantees, where ``floor-*`` is the
floor of no queue at all. What it keeps, per job:

- the job is stored before it runs (Redis: a hash and a sorted set of waiting
  ids; PostgreSQL: a row), with JSON arguments the worker decodes;
- one atomic call per job, on the worker's own connection, records the previous
  job's success, fenced by that job's lease token (a job whose lease moved on is
  not deleted), and leases the next: a fresh token, an expiry, an attempt
  count, and (Redis) a running set scored by expiry, so a dead worker's jobs
  can be found and run again;
- at most ``concurrency`` jobs claimed and not finished (``prefetch=0``).

What it leaves out is everything else exqueue does: retries and their
history, priorities, unique keys, limits, pauses, serial types, expiry,
hooks, metrics, heartbeats, graceful stops. It batches nothing: each slot
(a thread, or an asyncio task) claims one job per round trip, which at one
slot is the least any worker with ``prefetch=0`` can do (a job cannot be
claimed before the slot is free, and the claim is the call that returns it).
At more slots exqueue batches its writes, so it can exceed this row.

``EXQ_BARE_BATCH=1`` (Redis only) runs one thread that claims up to
``concurrency`` jobs per call instead, running them in turn: the cheapest
shape for a body that never waits, such as the no-op.

``EXQ_BARE_BATCH=pool`` (Redis only) is the batched shape for a body that
waits: ``concurrency`` job threads and one pump thread. The pump's one call
records every success finished since its last call and claims as many jobs as
there are free threads; it makes that call whenever a thread is free. Nothing
else runs beside the jobs: the least a batching, threaded worker can do.

Slots poll every millisecond once nothing is waiting, and the process runs
until the harness stops it (SIGTERM), as a worker would.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from benchmarks import bodies, common
from benchmarks.matrix import ENV_BARE_BATCH, ENV_CONCURRENCY, pool_size

LEASE_SECONDS = 60.0
#: Redis keys (in the benchmark's own database, flushed around every run).
PREFIX = "exqbare:"
READY = PREFIX + "ready"
RUNNING = PREFIX + "running"
#: PostgreSQL table (in the benchmark's database, dropped around every run).
TABLE = "exqbare_jobs"
IDLE_POLL = 0.001

#: KEYS: ready, running. ARGV: job-key prefix, the finished job's id ('' for
#: none) and its token, the new token, the new lease's expiry. Returns the leased
#: job's id and payload, or false when none waits.
FINISH_AND_CLAIM = """
local prefix = ARGV[1]
if ARGV[2] ~= '' then
  local done = prefix .. ARGV[2]
  if redis.call('HGET', done, 'token') == ARGV[3] then
    redis.call('ZREM', KEYS[2], ARGV[2])
    redis.call('DEL', done)
  end
end
local got = redis.call('ZPOPMIN', KEYS[1])
if #got == 0 then return false end
local id = got[1]
local key = prefix .. id
redis.call('HSET', key, 'token', ARGV[4], 'lease', ARGV[5])
redis.call('HINCRBY', key, 'attempt', 1)
redis.call('ZADD', KEYS[2], ARGV[5], id)
return {id, redis.call('HGET', key, 'payload')}
"""

#: The same for many jobs at once (the asyncio slots' one pump): ARGV: job-key
#: prefix, how many to claim, the claim's token, its lease's expiry, then the
#: finished jobs' ids and tokens, in pairs. Returns ids and payloads, flat.
FINISH_AND_CLAIM_MANY = """
local prefix = ARGV[1]
for i = 5, #ARGV, 2 do
  local done = prefix .. ARGV[i]
  if redis.call('HGET', done, 'token') == ARGV[i + 1] then
    redis.call('ZREM', KEYS[2], ARGV[i])
    redis.call('DEL', done)
  end
end
local out = {}
local want = tonumber(ARGV[2])
if want < 1 then return out end
local got = redis.call('ZPOPMIN', KEYS[1], want)
for i = 1, #got, 2 do
  local id = got[i]
  local key = prefix .. id
  redis.call('HSET', key, 'token', ARGV[3], 'lease', ARGV[4])
  redis.call('HINCRBY', key, 'attempt', 1)
  redis.call('ZADD', KEYS[2], ARGV[4], id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', key, 'payload')
end
return out
"""

PG_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigint PRIMARY KEY, payload text NOT NULL,"
    " running boolean NOT NULL DEFAULT false, token text, lease double precision,"
    " attempt integer NOT NULL DEFAULT 0)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_waiting ON {TABLE} (id) WHERE NOT running",
)
#: One statement, one round trip, autocommit: the success and the next claim.
PG_FINISH_AND_CLAIM = f"""
WITH done AS (DELETE FROM {TABLE} WHERE id = %(done)s AND token = %(old)s),
next AS (SELECT id FROM {TABLE} WHERE NOT running ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
UPDATE {TABLE} AS j SET running = true, token = %(token)s, lease = %(lease)s,
    attempt = j.attempt + 1
FROM next WHERE j.id = next.id
RETURNING j.id, j.payload
"""


def payload(n: int) -> str:
    return json.dumps([[n], {}])


def run_payload(raw: bytes | str) -> None:
    args, kwargs = json.loads(raw)
    bodies.run(*args, **kwargs)


def new_token() -> str:
    return os.urandom(16).hex()


# -- the harness's side: a store to fill ------------------------------------------------


class BareRedis(common.RedisPeer):
    library = "bare"
    backend = "redis"
    batch = True
    notes = "reference: one lease-fenced finish-and-claim script call per job, no runtime"

    def enqueue_batch(self, ns: Sequence[int]) -> None:
        client = self._client()
        with client.pipeline(transaction=True) as pipe:
            for n in ns:
                pipe.hset(f"{PREFIX}{n}", "payload", payload(n))
            pipe.zadd(READY, {str(n): n for n in ns})
            pipe.execute()

    def enqueue_one(self, n: int) -> None:
        self.enqueue_batch([n])

    def _client(self) -> Any:
        client = getattr(self, "_redis", None)
        if client is None:
            client = self._redis = common.redis_client()
        return client

    def teardown(self) -> None:
        super().teardown()
        client = getattr(self, "_redis", None)
        if client is not None:
            client.close()
            self._redis = None


class BareRedisAsyncio(BareRedis):
    backend = "redis-asyncio"
    notes = "reference: asyncio tasks, one lease-fenced finish-and-claim call per job"


class BarePostgres(common.Adapter):
    library = "bare"
    backend = "postgres"
    batch = True
    notes = "reference: one lease-fenced finish-and-claim statement per job, no runtime"

    def setup(self) -> None:
        import psycopg

        common.ensure_databases()
        self._conn = psycopg.connect(common.PG_DSN, autocommit=True)
        self._conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        for statement in PG_SCHEMA:
            self._conn.execute(statement)

    def clear(self) -> None:
        self._conn.execute(f"TRUNCATE {TABLE}")

    def enqueue_batch(self, ns: Sequence[int]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {TABLE} (id, payload) VALUES (%s, %s)", [(n, payload(n)) for n in ns]
            )

    def enqueue_one(self, n: int) -> None:
        self.enqueue_batch([n])

    def teardown(self) -> None:
        self._conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        self._conn.close()


ADAPTERS: list[type[common.Adapter]] = [BareRedis, BareRedisAsyncio, BarePostgres]


class ClaimedJob:
    """A job the bound claimed: its id and payload (what its worker reads of it)."""

    __slots__ = ("id", "payload")

    def __init__(self, job_id: str, raw: bytes) -> None:
        self.id, self.payload = job_id, raw


class ScriptStore:
    """The bound's Redis scripts behind the calls that ``benchmarks.redisinstr`` makes
    of a ``RedisStorage`` (``--tree bound=bare``), so the server's instructions per job
    of the bound and of exqueue are counted the same way. Each claim and each batch
    of successes is one ``FINISH_AND_CLAIM_MANY`` call, as the batched bound makes.
    """

    def __init__(self, url: str, namespace: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.prefix = f"{namespace}:"
        self.keys = [self.prefix + "ready", self.prefix + "running"]
        self.script = self.client.register_script(FINISH_AND_CLAIM_MANY)
        self.enqueued = 0

    def enqueue(self, jobs: Sequence[Any]) -> None:
        """Store each job's payload under its id and queue it, in enqueue order."""
        with self.client.pipeline(transaction=True) as pipe:
            for job in jobs:
                pipe.hset(self.prefix + job.id, "payload", job.payload)
            pipe.zadd(self.keys[0], {job.id: self.enqueued + i for i, job in enumerate(jobs)})
            pipe.execute()
        self.enqueued += len(jobs)

    def claim(self, worker: str, limit: int, *, now: float, owner: str, token: str,
              lease_until: float) -> list[ClaimedJob]:  # fmt: skip
        flat = self.script(keys=self.keys, args=[self.prefix, limit, token, repr(lease_until)])
        return [ClaimedJob(flat[i].decode(), flat[i + 1]) for i in range(0, len(flat), 2)]

    def complete_many(self, items: Sequence[tuple[str, str]], *, now: float) -> list[str]:
        """Record the successes (the script reports none back: every one is counted)."""
        done = [part for pair in items for part in pair]
        self.script(keys=self.keys, args=[self.prefix, 0, "", "0", *done])
        return [job_id for job_id, _ in items]

    def complete(self, job_id: str, token: str, *, now: float) -> bool:
        return bool(self.complete_many([(job_id, token)], now=now))

    def close(self) -> None:
        self.client.close()


# -- the worker process ---------------------------------------------------------------


def redis_slot(stop: threading.Event) -> None:
    client = common.redis_client()
    script = client.register_script(FINISH_AND_CLAIM)
    done, old = "", ""
    while not stop.is_set():
        token = new_token()
        got = script(
            keys=[READY, RUNNING],
            args=[PREFIX, done, old, token, repr(time.time() + LEASE_SECONDS)],
        )
        if not got:
            done = old = ""
            time.sleep(IDLE_POLL)
            continue
        job_id, raw = got
        run_payload(raw)
        done, old = job_id.decode(), token


def redis_batches(concurrency: int, stop: threading.Event) -> None:
    """``EXQ_BARE_BATCH=1``: one thread claims up to ``concurrency`` jobs per call, with
    the successes of the last call's jobs, and runs them in turn: the cheapest shape
    for a body that never waits (no-op), where more threads only add hand-offs."""
    client = common.redis_client()
    script = client.register_script(FINISH_AND_CLAIM_MANY)
    done: list[str] = []
    while not stop.is_set():
        token = new_token()
        lease = repr(time.time() + LEASE_SECONDS)
        flat = script(keys=[READY, RUNNING], args=[PREFIX, concurrency, token, lease, *done])
        done = []
        for i in range(0, len(flat), 2):
            run_payload(flat[i + 1])
            done += (flat[i].decode(), token)
        if not flat:
            time.sleep(IDLE_POLL)


def redis_pump(concurrency: int, stop: threading.Event) -> None:
    """``EXQ_BARE_BATCH=pool``: one pump claims for ``concurrency`` job threads, with
    the successes they finished since its last call, whenever a thread is free."""
    import queue

    client = common.redis_client()
    script = client.register_script(FINISH_AND_CLAIM_MANY)
    jobs: queue.SimpleQueue[tuple[str, str, bytes]] = queue.SimpleQueue()
    changed = threading.Condition()
    finished: list[str] = []
    running = 0

    def job_thread() -> None:
        nonlocal running
        while True:
            job_id, token, raw = jobs.get()
            run_payload(raw)
            with changed:
                finished.extend((job_id, token))
                running -= 1
                changed.notify()

    for _ in range(concurrency):
        threading.Thread(target=job_thread, daemon=True).start()
    while not stop.is_set():
        with changed:
            while running >= concurrency:
                changed.wait()
            done = finished.copy()
            finished.clear()
            want = concurrency - running
        token = new_token()
        lease = repr(time.time() + LEASE_SECONDS)
        flat = script(keys=[READY, RUNNING], args=[PREFIX, want, token, lease, *done])
        if not flat:
            with changed:
                # Nothing waits: poll again after a while, or once a success is due.
                changed.wait(IDLE_POLL)
            continue
        with changed:
            running += len(flat) // 2
        for i in range(0, len(flat), 2):
            jobs.put((flat[i].decode(), token, flat[i + 1]))


def postgres_slot(stop: threading.Event) -> None:
    import psycopg

    conn = psycopg.connect(common.PG_DSN, autocommit=True, options="-c synchronous_commit=off")
    done, old = -1, ""
    while not stop.is_set():
        token = new_token()
        params = {"done": done, "old": old, "token": token, "lease": time.time() + LEASE_SECONDS}
        row = conn.execute(PG_FINISH_AND_CLAIM, params, prepare=True).fetchone()
        if row is None:
            done, old = -1, ""
            time.sleep(IDLE_POLL)
            continue
        job_id, raw = row
        run_payload(raw)
        done, old = job_id, token


def threads(slot: Any, concurrency: int, stop: threading.Event) -> None:
    for _ in range(concurrency):
        threading.Thread(target=slot, args=(stop,), daemon=True).start()


def main(argv: list[str]) -> int:
    modes = ("redis", "redis-asyncio", "postgres")
    if len(argv) != 1 or argv[0] not in modes:
        print(f"usage: python -m benchmarks.bare {'|'.join(modes)}", file=sys.stderr)
        return 2
    concurrency = int(os.environ[ENV_CONCURRENCY])
    stop = threading.Event()
    if argv[0] == "redis-asyncio":
        import asyncio

        from benchmarks import bare_asyncio

        # Nothing to hand back on a stop: a leased job left running is the bound's loss.
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        asyncio.run(bare_asyncio.run(concurrency, stop, pool_size()))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    batch = os.environ.get(ENV_BARE_BATCH)
    if argv[0] == "redis" and batch == "pool":
        threading.Thread(target=redis_pump, args=(concurrency, stop), daemon=True).start()
        stop.wait()
        return 0
    if argv[0] == "redis" and batch:
        threading.Thread(target=redis_batches, args=(concurrency, stop), daemon=True).start()
        stop.wait()
        return 0
    threads(redis_slot if argv[0] == "redis" else postgres_slot, concurrency, stop)
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
