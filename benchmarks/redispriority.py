"""Redis claim cost with a million waiting jobs over ten priorities, on a private redis-server.

    python -m benchmarks.redispriority [--waiting 1000000] [--priorities 10] [--claims 1000]
                                       [--repeat 5]

Starts its own redis-server on a free loopback port (the shared server keeps its
memory), then times ``--claims`` rounds of ``claim(limit=1)`` + ``complete`` (as
a worker with one free slot makes them) twice: on a namespace holding only those
jobs, and on one that also holds ``--waiting`` waiting jobs spread evenly over
``--priorities`` priorities plus a tenth as many scheduled for later (the
scheduled set a claim promotes from). Prints wall time per round and Redis's own
``usec_per_call`` of EVALSHA (claim and complete scripts averaged) (``INFO commandstats``), and the
ratio full / empty (target: at most 2x). Empty and full are measured in turn,
``--repeat`` times, and the best of each is kept (a busy machine only adds
time). The jobs are written by batch enqueue through the storage API.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import redis

from exqueue.storage import NewJob
from exqueue_redis import RedisStorage
from tests.support.redis_servers import RedisServer

NOW = 1_000.0


def fill(storage: RedisStorage, count: int, priorities: int, *, later: bool = False) -> None:
    run_at = NOW * 10 if later else NOW - 1
    for start in range(0, count, 5000):
        storage.enqueue([
            NewJob(f"f{'s' if later else 'w'}-{n}", "w", b"[[1], {}]", run_at, NOW - 1, 3,
                   priority=n % priorities)
            for n in range(start, min(start + 5000, count))
        ])  # fmt: skip


def measure(
    url: str, storage: RedisStorage, claims: int, priorities: int, tag: str
) -> tuple[float, float]:
    """Wall seconds per claim+complete round, and server microseconds per script."""
    client = redis.Redis.from_url(url)
    ids = [f"m{tag}-{n}" for n in range(claims)]
    storage.enqueue([
        NewJob(job_id, "w", b"[[1], {}]", NOW - 1, NOW - 1, 3, priority=n % priorities)
        for n, job_id in enumerate(ids)
    ])  # fmt: skip
    client.config_resetstat()
    started = time.perf_counter()
    for n in range(claims):
        token = f"t{n}"
        records = storage.claim("w", 1, now=NOW, owner="n", token=token, lease_until=NOW + 60)
        assert len(records) == 1
        storage.complete(records[0].id, token, now=NOW)
    elapsed = time.perf_counter() - started
    # Claims and completes alternate: Redis's average covers both scripts.
    script_usec = float(client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])
    client.close()
    return elapsed / claims, script_usec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--waiting", type=int, default=1_000_000)
    parser.add_argument("--priorities", type=int, default=10)
    parser.add_argument("--claims", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            empty = RedisStorage(server.url, namespace=f"e{uuid.uuid4().hex[:6]}")
            full = RedisStorage(server.url, namespace=f"f{uuid.uuid4().hex[:6]}")
            started = time.perf_counter()
            fill(full, args.waiting, args.priorities)
            fill(full, args.waiting // 10, args.priorities, later=True)
            filled = time.perf_counter() - started
            counts = full.counts(NOW)["w"]
            runs: dict[str, list[tuple[float, float]]] = {"empty": [], "full": []}
            for n in range(args.repeat):
                for name, storage in (("empty", empty), ("full", full)):
                    runs[name].append(
                        measure(server.url, storage, args.claims, args.priorities, str(n))
                    )
            empty_round, full_round = (min(r[0] for r in runs[k]) for k in ("empty", "full"))
            empty_usec, full_usec = (min(r[1] for r in runs[k]) for k in ("empty", "full"))
            print(f"filled {counts.waiting} waiting + {counts.scheduled} scheduled jobs over "
                  f"{args.priorities} priorities in {filled:.1f} s")  # fmt: skip
            print(f"{'store':<8}{'ms/round (wall)':>18}{'us/script (server)':>22}")
            print(f"{'empty':<8}{empty_round * 1e3:>18.3f}{empty_usec:>22.1f}")
            print(f"{'full':<8}{full_round * 1e3:>18.3f}{full_usec:>22.1f}")
            print(f"ratio full/empty: wall {full_round / empty_round:.2f}x, "
                  f"server {full_usec / empty_usec:.2f}x (target <= 2x)")  # fmt: skip
            empty.close()
            full.close()
        finally:
            server.kill()


if __name__ == "__main__":
    main()
