"""Claim cost against a big store: 1,000 claim+complete round trips with many jobs stored.

    python -m benchmarks.claimcost [--backends postgres,sqlite,mariadb,redis,memory]
                                   [--waiting 1000000] [--dead 100000]
                                   [--mode dead|priorities] [--priorities 10]

For each backend, times 1,000 ``claim(limit=1)`` + ``complete`` calls (the
storage protocol, as a worker with one free slot makes them) on a store holding
only those jobs, then on a store that also holds ``--waiting`` waiting and
``--dead`` dead jobs of the same worker type, and prints the ratio (target: at
most 2x). The jobs claimed in the full store are the oldest waiting ones, so
every claim has to pass the dead jobs and sit in front of the million waiting.

``--mode priorities`` (protocol 2) stores no dead jobs; the ``--waiting`` jobs are
spread evenly over ``--priorities`` priorities (0, 1, ... round robin in enqueue
order), so every claim picks the best of ten priorities among a million jobs.

SQL stores are filled with a server-side INSERT ... SELECT that copies 1,000 jobs
enqueued through the API (then marks the oldest ones dead), so filling a million
rows takes seconds. Redis is filled through the API (batch enqueue, claim and
bury), so by default it gets a tenth of the jobs (``--redis-scale``); that keeps
the shared server's memory in bounds.
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any

from sqlalchemy import text
from tabulate import tabulate

from benchmarks import common
from benchmarks.exq_app import JOB, PREFIX, make_queue, make_storage
from exqueue.job import Call

URLS = {
    "postgres": common.PG_URL,
    "sqlite": "sqlite:///{tmp}",
    "redis": common.REDIS_URL,
    "mariadb": common.MYSQL_URL,
    "memory": "memory://",
}
TEMPLATE = 1000


def fresh(backend: str, tmp: str) -> Any:
    url = URLS[backend].format(tmp=tmp)
    storage = make_storage(url)
    if backend == "memory":
        return storage
    if hasattr(storage, "destroy"):
        storage.destroy()
        storage.close()
        storage = make_storage(url)
    else:
        common.flush_bench_redis()
    return storage


def enqueue(storage: Any, count: int, chunk: int = 5000) -> None:
    queue = make_queue(storage, 1)
    for start in range(0, count, chunk):
        queue.enqueue_many([Call(JOB, (n,), {}) for n in range(start, min(start + chunk, count))])


def fill_sql(storage: Any, waiting: int, dead: int, priorities: int = 1) -> None:
    """``dead`` dead jobs (lowest seq), then ``waiting`` waiting ones, copied server-side.

    The copies take priorities ``0 .. priorities - 1`` in turn.
    """
    enqueue(storage, TEMPLATE)
    table = f"{PREFIX}jobs"
    copies = -(-(waiting + dead) // TEMPLATE)
    dialect = storage.engine.dialect.name
    if dialect == "postgresql":
        series, concat = "generate_series(1, :k) AS g(i)", "t.id || '-' || g.i"
    elif dialect == "sqlite":
        series = (
            "(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :k)"
            " SELECT i FROM s) AS g"
        )
        concat = "t.id || '-' || g.i"
    else:
        series = (
            "(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :k)"
            " SELECT i FROM s) AS g"
        )
        concat = "CONCAT(t.id, '-', g.i)"
    cols = "worker, payload, state, attempt, max_attempts, run_at, enqueued_at, errors"
    copied = ", ".join(f"t.{c}" for c in cols.split(", "))
    if priorities > 1:
        cols += ", priority"
        copied += f", (t.seq + g.i) % {int(priorities)}"
    with storage.engine.begin() as conn:
        if dialect in ("mysql", "mariadb"):
            conn.execute(text("SET SESSION max_recursive_iterations = 1000000"))
        conn.execute(
            text(
                f"INSERT INTO {table} (id, {cols}) SELECT {concat}, {copied} "
                f"FROM {table} AS t CROSS JOIN {series} ORDER BY g.i, t.seq"
            ),
            {"k": copies},
        )
        conn.execute(text(f"DELETE FROM {table} WHERE id NOT LIKE '%-%'"))
        first = conn.execute(text(f"SELECT MIN(seq) FROM {table}")).scalar()
        conn.execute(
            text(f"UPDATE {table} SET state = 'dead', attempt = 1 WHERE seq < :s"),
            {"s": first + dead},
        )
        if dialect == "postgresql":
            conn.execute(text(f"ANALYZE {table}"))


def fill_api(storage: Any, waiting: int, dead: int, priorities: int = 1) -> None:
    if priorities > 1:
        # Straight through the storage protocol: the priority rides on each NewJob.
        from exqueue.storage import NewJob

        now = time.time()
        for start in range(0, waiting, 5000):
            storage.enqueue(
                [
                    NewJob(uuid.uuid4().hex, JOB, b"", now, now, 1, priority=n % priorities)
                    for n in range(start, min(start + 5000, waiting))
                ]
            )
        return
    enqueue(storage, dead)
    now = time.time()
    token = uuid.uuid4().hex
    while records := storage.claim(
        JOB, 1000, now=now, owner="fill", token=token, lease_until=now + 3600
    ):
        for record in records:
            storage.bury(record.id, token, error="benchmark filler")
    enqueue(storage, waiting)


def claim_complete(storage: Any, count: int) -> float:
    """Seconds for ``count`` claim(limit=1) + complete calls."""
    start = time.perf_counter()
    for _ in range(count):
        now = time.time()
        token = uuid.uuid4().hex
        records = storage.claim(JOB, 1, now=now, owner="bench", token=token, lease_until=now + 30)
        if len(records) != 1:
            raise common.BenchError(f"claim returned {len(records)} jobs, expected 1")
        if not storage.complete(records[0].id, token):
            raise common.BenchError("complete was refused")
    return time.perf_counter() - start


def measure(
    backend: str, waiting: int, dead: int, count: int, tmp: str, priorities: int = 1
) -> dict[str, Any]:
    storage = fresh(backend, tmp)
    try:
        enqueue(storage, count)
        empty = claim_complete(storage, count)
        storage.close()
        storage = fresh(backend, tmp)
        started = time.perf_counter()
        if backend in ("redis", "memory"):
            fill_api(storage, waiting, dead, priorities)
        else:
            fill_sql(storage, waiting, dead, priorities)
        filled = time.perf_counter() - started
        full = claim_complete(storage, count)
    finally:
        storage.close()
        if backend == "redis":
            common.flush_bench_redis()
        elif backend != "memory":
            cleanup = make_storage(URLS[backend].format(tmp=tmp))
            cleanup.destroy()
            cleanup.close()
    return {
        "backend": backend,
        "waiting": waiting,
        "dead": dead,
        "empty_ms": empty * 1000,
        "full_ms": full * 1000,
        "ratio": full / empty,
        "fill_s": filled,
    }


def main(argv: list[str] | None = None) -> int:
    parser = common.arguments("benchmarks.claimcost", __doc__)
    parser.add_argument("--backends", default="postgres,sqlite,redis")
    parser.add_argument("--waiting", type=int, default=1_000_000)
    parser.add_argument("--dead", type=int, default=100_000)
    parser.add_argument("--claims", type=int, default=1000)
    parser.add_argument("--redis-scale", type=float, default=0.1)
    parser.add_argument("--mode", choices=("dead", "priorities"), default="dead")
    parser.add_argument("--priorities", type=int, default=10)
    args = parser.parse_args(argv)
    priorities = args.priorities if args.mode == "priorities" else 1
    if args.mode == "priorities":
        args.dead = 0
    common.ensure_databases()
    import tempfile

    tmp = tempfile.mkdtemp(prefix="exqbench-claim-") + "/claim.db"
    rows = []
    for backend in args.backends.split(","):
        scale = args.redis_scale if backend == "redis" else 1.0
        print(f"{backend} ...", file=sys.stderr, flush=True)
        r = measure(
            backend,
            int(args.waiting * scale),
            int(args.dead * scale),
            args.claims,
            tmp,
            priorities,
        )
        print(f"    {r}", file=sys.stderr, flush=True)
        rows.append(
            [
                backend,
                f"{r['waiting']:,}",
                f"{r['dead']:,}",
                f"{r['empty_ms'] / args.claims:.3f}",
                f"{r['full_ms'] / args.claims:.3f}",
                f"{r['ratio']:.2f}×",
                "yes" if r["ratio"] <= 2 else "no",
                f"{r['fill_s']:.0f}",
            ]
        )
    print()
    spread = f", waiting jobs over {priorities} priorities" if priorities > 1 else ""
    print(
        f"claim(limit=1) + complete, {args.claims:,} times: ms per job, empty store vs full "
        f"store{spread}"
    )
    print(
        tabulate(
            rows,
            [
                "backend",
                "waiting",
                "dead",
                "empty ms/job",
                "full ms/job",
                "full/empty",
                "≤ 2×?",
                "fill s",
            ],
            tablefmt="github",
            disable_numparse=True,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
