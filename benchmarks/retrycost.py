"""Cost of one failed attempt as a job's error history grows (issue #13 item 8).

    python -m benchmarks.retrycost [--backends sqlite,postgres,mariadb,redis,memory]
                                   [--failures 600] [--error-bytes 2000]

For each backend, one job is claimed and failed (``schedule_retry``) again and
again with a traceback-sized error text, through the storage protocol only. It
prints the median time of one claim + retry around failure 20, 100 and the last
one, and the size of the stored error history at the end. With the history
bounded (first error + last 20) both stay flat; before, each retry rewrote every
stored error on SQL. Run it from a checkout of the earlier code (with this
directory on PYTHONPATH) to compare.
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
from exqueue.storage import NewJob, Storage

WINDOW = 15  # retries timed around each checkpoint


def open_storage(backend: str, tmp: str) -> Storage:
    tag = f"rc{uuid.uuid4().hex[:8]}"
    if backend == "memory":
        from exqueue_memory import MemoryStorage

        return MemoryStorage()
    if backend == "redis":
        from exqueue_redis import RedisStorage

        return RedisStorage(common.REDIS_URL, namespace=tag)
    from exqueue_sql import SQLStorage

    url = {"sqlite": f"sqlite:///{tmp}/retrycost.db", "postgres": common.PG_URL}.get(
        backend, common.MYSQL_URL
    )
    return SQLStorage(url, prefix=f"{tag}_")


def measure(backend: str, failures: int, error_bytes: int) -> list[Any]:
    with tempfile.TemporaryDirectory() as tmp:
        storage = open_storage(backend, tmp)
        try:
            storage.enqueue([NewJob("job", "w", b"[[], {}]", 0.0, 0.0, failures + 1)])
            checkpoints = sorted({min(20, failures), min(100, failures), failures})
            times: dict[int, list[float]] = {c: [] for c in checkpoints}
            text = "Traceback (most recent call last):\n" + "x" * error_bytes
            for n in range(1, failures + 1):
                token = f"t{n}"
                start = time.perf_counter()
                storage.claim("w", 1, now=float(n), owner="o", token=token, lease_until=n + 60.0)
                storage.schedule_retry("job", token, run_at=float(n), error=f"{n}: {text}")
                took = time.perf_counter() - start
                for c in checkpoints:
                    if c - WINDOW < n <= c:
                        times[c].append(took)
            record = storage.get("job")
            kept = len(record.errors) if record is not None else 0
            stored = sum(len(e.encode()) for e in record.errors) if record is not None else 0
            row: list[Any] = [backend]
            row += [f"{statistics.median(times[c]) * 1000:.2f}" for c in checkpoints]
            return [*row, kept, f"{stored / 1024:.0f} KiB"]
        finally:
            destroy = getattr(storage, "destroy", None)
            if destroy is not None:
                destroy()
            storage.close()


def main(argv: list[str] | None = None) -> None:
    parser = common.arguments("benchmarks.retrycost", __doc__)
    parser.add_argument("--backends", default="sqlite,postgres,mariadb,redis,memory")
    parser.add_argument("--failures", type=int, default=600)
    parser.add_argument("--error-bytes", type=int, default=2000)
    args = parser.parse_args(argv)
    rows = [measure(b, args.failures, args.error_bytes) for b in args.backends.split(",")]
    marks = sorted({min(20, args.failures), min(100, args.failures), args.failures})
    headers = ["backend", *(f"ms/retry @{c}" for c in marks), "errors kept", "history size"]
    print(tabulate(rows, headers=headers))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
