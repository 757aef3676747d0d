"""Redis server time per enqueue, claim and complete script, on a private redis-server.

    python -m benchmarks.redisclaim [--jobs 20000] [--batch 8] [--repeat 4]

Starts its own redis-server on a free loopback port (never the shared one's
statistics), enqueues ``--jobs`` jobs 100 at a time, claims them ``--batch`` at
a time, then completes them in the same batches, and prints Redis's own ``usec_per_call`` of
EVALSHA for each phase (``INFO commandstats``): the cost of the Lua scripts on
the server, less sensitive to a busy client machine than wall time. Reports the
minimum over ``--repeat`` rounds. Run it on two checkouts to compare scripts.
"""

from __future__ import annotations

import argparse
import tempfile
import uuid
from pathlib import Path

import redis

from exqueue.storage import NewJob
from exqueue_redis import RedisStorage
from tests.support.redis_servers import RedisServer


def one_round(url: str, jobs: int, batch: int) -> tuple[float, float, float]:
    client = redis.Redis.from_url(url)
    storage = RedisStorage(url, namespace=f"b{uuid.uuid4().hex[:8]}")
    try:
        client.config_resetstat()
        for start in range(0, jobs, 100):
            numbers = range(start, min(start + 100, jobs))
            storage.enqueue([NewJob(f"j-{n}", "w", b"[[1], {}]", 0.0, 0.0, 3) for n in numbers])
        enqueue = float(client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])
        client.config_resetstat()
        held = []
        while records := storage.claim("w", batch, now=1.0, owner="n", token="t", lease_until=9.0):
            held.append([(record.id, "t") for record in records])
        claim = float(client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])
        client.config_resetstat()
        for pairs in held:
            storage.complete_many(pairs)
        complete = float(client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])
        return enqueue, claim, complete
    finally:
        storage.destroy()
        storage.close()
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=4)
    options = parser.parse_args()
    server = RedisServer(Path(tempfile.mkdtemp(prefix="exqueue-bench-")) / "redis").start()
    try:
        rounds = [one_round(server.url, options.jobs, options.batch) for _ in range(options.repeat)]
    finally:
        server.kill()
    enqueue, claim, complete = (min(r[i] for r in rounds) for i in range(3))
    batch = options.batch
    print(
        f"enqueue of 100: {enqueue:.1f} us, claim of {batch}: {claim:.1f} us, "
        f"complete of {batch}: {complete:.1f} us"
    )


if __name__ == "__main__":
    main()
