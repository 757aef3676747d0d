"""Race figures for limited claims: peak running seen versus the limit, per backend (issue 15).

    python -m benchmarks.limitrace [--backends sqlite,postgres,mariadb,redis]
                                   [--jobs 400] [--threads 8] [--processes 4]

Runs the conformance suite's limit races (:mod:`conformance.limit_races`) with
more jobs than the suite does: ``--threads`` threads on one storage object, then
``--processes`` OS processes each with its own storage over one store, claiming
a type limited to 3 running as a whole and a type limited to 2 per partition
(3 partitions), each job held a millisecond or two. A race fails (raises) when
the recorded intervals ever overlap beyond a limit; the table shows the peak
seen next to the limit.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import uuid
from typing import Any

from tabulate import tabulate

from benchmarks import common
from conformance.limit_races import race_limits_processes, race_limits_threads

PG_URL = os.environ.get("EXQUEUE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("EXQUEUE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("EXQUEUE_TEST_REDIS_URL", common.REDIS_URL)


def factory(backend: str, tmp: str) -> Any:
    tag = uuid.uuid4().hex[:8]
    if backend == "redis":
        from exqueue_redis import RedisStorage

        return functools.partial(RedisStorage, REDIS_URL, namespace=f"lr{tag}")
    from exqueue_sql import SQLStorage

    url = {"sqlite": f"sqlite:///{tmp}/lr.db", "postgres": PG_URL, "mariadb": MYSQL_URL}[backend]
    return functools.partial(SQLStorage, url, prefix=f"lr{tag}_")


def main(argv: list[str]) -> None:
    parser = common.arguments("benchmarks.limitrace", __doc__)
    parser.add_argument("--backends", default="sqlite,postgres,mariadb,redis")
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args(argv)
    rows = []
    for backend in args.backends.split(","):
        make = factory(backend, tempfile.mkdtemp())
        storage = make()
        try:
            races = [
                (f"{args.threads} threads",
                 functools.partial(race_limits_threads, storage, threads=args.threads,
                                   jobs=args.jobs)),
                (f"{args.processes} processes",
                 functools.partial(race_limits_processes, make, processes=args.processes,
                                   jobs=args.jobs)),
            ]  # fmt: skip
            for how, run in races:
                f = run()
                rows.append([backend, how, f"{f.whole_peak} / {f.whole_limit}",
                             f"{f.partition_peak} / {f.partition_limit}", f.claims])  # fmt: skip
        finally:
            if hasattr(storage, "destroy"):
                storage.destroy()
            storage.close()
    print(tabulate(rows, headers=["backend", "racers", "peak / limit (whole)",
                                  "peak / limit (per partition)", "jobs"]))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
