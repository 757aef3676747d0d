"""What a limit costs a claim: limited and unlimited worker types, side by side in one run.

    python -m benchmarks.limitclaim [--backends memory,sqlite,postgres,mariadb,redis]
                                    [--claims 500] [--repeats 5]

For each backend that declares the ``limits`` capability, times ``--claims``
claim-and-complete round trips (``limit=1``, as a worker with one free slot makes
them) of four worker types in the same store: unlimited (``Storage.claim``),
``global_limit`` (``claim_limited`` with a concurrency bound), per partition
(over 10 partitions), and with a rate limit. The four are interleaved, repeated
``--repeats`` times, and reported as the median microseconds per claim with the
range, and as the ratio to the unlimited type's median (issue 15's target: a
limited claim costs at most one extra round trip, about 2x the unlimited claim
on a networked backend).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

from tabulate import tabulate

from benchmarks import common
from benchmarks.exq_app import make_storage
from exqueue.storage import LIMITS, LimitedClaim, Limits, NewJob

URLS = {
    "memory": "memory://",
    "sqlite": "sqlite:///{tmp}/limitclaim.db",
    "postgres": common.PG_URL,
    "mariadb": common.MYSQL_URL,
    "redis": common.REDIS_URL,
}
KINDS: dict[str, Limits | None] = {
    "unlimited": None,
    "global_limit=50": Limits(concurrency=50),
    "global_limit=5 per partition": Limits(concurrency=5, partitioned=True),
    "rate_limit=1000000/s": Limits(rate=1_000_000, per=1.0),
}


def _fill(storage: Any, worker: str, count: int, partitioned: bool) -> None:
    now = time.time()
    jobs = [
        NewJob(
            id=uuid.uuid4().hex,
            worker=worker,
            payload=b"[[1],{}]",
            run_at=now,
            enqueued_at=now,
            max_attempts=3,
            partition=f"p{n % 10}" if partitioned else None,
        )
        for n in range(count)
    ]
    for start in range(0, count, 1000):
        storage.enqueue(jobs[start : start + 1000])


def _round(storage: Any, worker: str, limits: Limits | None, claims: int) -> float:
    """Seconds per claim+complete, over ``claims`` of them."""
    started = time.perf_counter()
    for _ in range(claims):
        now = time.time()
        token = uuid.uuid4().hex
        if limits is None:
            got = storage.claim(worker, 1, now=now, owner="b", token=token, lease_until=now + 60)
        else:
            request = LimitedClaim(worker, 1, now, "b", token, now + 60, limits)
            got = storage.claim_limited(request)
        if len(got) != 1:
            raise common.BenchError(f"{worker}: a claim found no job")
        storage.complete(got[0].id, token)
    return (time.perf_counter() - started) / claims


def bench(backend: str, claims: int, repeats: int) -> list[list[Any]] | None:
    with tempfile.TemporaryDirectory() as tmp:
        storage = make_storage(URLS[backend].format(tmp=tmp))
        try:
            if LIMITS not in storage.capabilities:
                print(f"{backend}: no 'limits' capability, skipped", file=sys.stderr)
                return None
            tag = uuid.uuid4().hex[:8]
            workers = {kind: f"bench.limit.{n}.{tag}" for n, kind in enumerate(KINDS)}
            for kind, limits in KINDS.items():
                partitioned = limits is not None and limits.partitioned
                _fill(storage, workers[kind], claims * repeats, partitioned)
            times: dict[str, list[float]] = {kind: [] for kind in KINDS}
            for _ in range(repeats):  # interleaved: the kinds share every disturbance
                for kind, limits in KINDS.items():
                    times[kind].append(_round(storage, workers[kind], limits, claims))
        finally:
            storage.close()
    base = statistics.median(times["unlimited"])
    return [
        [
            backend,
            kind,
            f"{statistics.median(t) * 1e6:.0f}",
            f"{min(t) * 1e6:.0f}-{max(t) * 1e6:.0f}",
            f"{statistics.median(t) / base:.2f}x",
        ]
        for kind, t in times.items()
    ]


def main() -> None:
    parser = common.arguments("benchmarks.limitclaim", __doc__)
    parser.add_argument("--backends", default="memory,sqlite,postgres,mariadb,redis")
    parser.add_argument("--claims", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    common.ensure_databases()
    rows: list[list[Any]] = []
    for backend in options.backends.split(","):
        rows += bench(backend, options.claims, options.repeats) or []
    headers = ["backend", "worker type", "µs/claim (median)", "range", "vs unlimited"]
    print(tabulate(rows, headers=headers))


if __name__ == "__main__":
    main()
