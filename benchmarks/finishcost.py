"""Client CPU per job of a storage-level drain on SQL: claim then complete, or finish_and_claim.

    python -m benchmarks.finishcost [--backend postgres|sqlite|mariadb] [--jobs 3000]
                                    [--repeat 5] [--profile] [--instructions]
                                    [--modes split,together]

One thread drains ``--jobs`` no-op jobs straight on the storage protocol, as a
job thread with ``prefetch=0`` does, in two ways, rounds interleaved:

- **split**: ``claim(limit=1)``, then ``complete_many([(id, token)], now=...)``;
- **together**: ``finish_and_claim`` with the previous job's success and a
  claim of one (the first call has no success, the last claims nothing).

Per job it prints this process's CPU (``time.process_time``: what the client
pays, steady under load) and the wall time (noisy on a shared machine), as
medians with min-max over ``--repeat`` rounds. ``--profile`` prints the top of
a cProfile (CPU time) of one round of each mode instead. ``--instructions``
counts the instructions this process executes per job instead (callgrind, the
hash seed fixed): one child drains 200 jobs, another ``--jobs``, both after the
same enqueue, and the difference is divided by the difference in jobs, so
start-up and enqueue cancel out; the figure does not move with the machine's
load. Tables get a prefix of their own and are dropped at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from exqueue.storage import NewJob
from exqueue.storage_next import FinishAndClaim
from exqueue_sql import SQLStorage

from .common import MYSQL_URL, PG_URL, arguments, ensure_databases

NOW = 1_700_000_000.0


def fill(storage: SQLStorage, jobs: int) -> None:
    batch = [
        NewJob(uuid.uuid4().hex, "w", b"[[], {}]", NOW, NOW, max_attempts=3) for _ in range(jobs)
    ]
    for start in range(0, jobs, 1000):
        storage.enqueue(batch[start : start + 1000])


def split(storage: SQLStorage, jobs: int) -> None:
    for n in range(jobs):
        token = f"t{n}"
        got = storage.claim("w", 1, now=NOW, owner="o", token=token, lease_until=NOW + 60)
        assert len(got) == 1
        assert storage.complete_many([(got[0].id, token)], now=NOW) == [got[0].id]


def together(storage: SQLStorage, jobs: int) -> None:
    done: list[tuple[str, str]] = []
    for n in range(jobs + 1):
        token = f"t{n}"
        request = FinishAndClaim(done, "w", 1 if n < jobs else 0, NOW, "o", token, NOW + 60)
        got = storage.finish_and_claim(request)
        assert len(got.completed) == len(done)
        assert len(got.claimed) == (1 if n < jobs else 0)
        done = [(got.claimed[0].id, token)] if got.claimed else []


MODES: dict[str, Callable[[SQLStorage, int], None]] = {"split": split, "together": together}


def one_round(storage: SQLStorage, mode: str, jobs: int) -> tuple[float, float]:
    """(client CPU s, wall s) per job of one drain of ``jobs``."""
    fill(storage, jobs)
    cpu, wall = time.process_time(), time.perf_counter()
    MODES[mode](storage, jobs)
    return (time.process_time() - cpu) / jobs, (time.perf_counter() - wall) / jobs


SMALL = 200  # jobs of the smaller child of --instructions


def instructions(backend: str, mode: str, drain: int, fill_jobs: int) -> int:
    """Instructions of a child that fills ``fill_jobs`` and drains ``drain`` in ``mode``."""
    with tempfile.TemporaryDirectory(prefix="exq-fc-") as tmp:
        out = os.path.join(tmp, "callgrind.out")
        command = [sys.executable, "-m", "benchmarks.finishcost", "--backend", backend]
        command += ["--child", mode, "--jobs", str(drain), "--fill", str(fill_jobs)]
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command],
            env={**os.environ, "PYTHONHASHSEED": "0"},
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"child failed:\n{done.stderr[-3000:]}")
        with open(out) as f:
            for line in f:
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
    raise RuntimeError("no totals in the callgrind output")


def child(storage: SQLStorage, mode: str, drain: int, fill_jobs: int) -> None:
    fill(storage, fill_jobs)
    MODES[mode](storage, drain)


def main() -> None:
    parser = arguments("benchmarks.finishcost", __doc__)
    parser.add_argument("--backend", default="postgres", choices=["postgres", "sqlite", "mariadb"])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--modes", default=",".join(MODES), help="split,together")
    parser.add_argument("--child", choices=list(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--fill", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend != "sqlite" and not args.child:
        ensure_databases()
    if args.instructions:
        for mode in args.modes.split(","):
            runs = [instructions(args.backend, mode, n, args.jobs) for n in (SMALL, args.jobs)]
            per_job = (runs[1] - runs[0]) / (args.jobs - SMALL)
            print(f"{args.backend} {mode:9} instructions/job {per_job:,.0f}")
        return
    with tempfile.TemporaryDirectory() as folder:
        url = {
            "postgres": PG_URL,
            "mariadb": MYSQL_URL,
            "sqlite": f"sqlite:///{Path(folder) / 'jobs.db'}",
        }[args.backend]
        storage = SQLStorage(url, prefix=f"fc{uuid.uuid4().hex[:8]}_")
        try:
            if args.child:
                child(storage, args.child, args.jobs, args.fill)
                return
            one_round(storage, "split", 200)  # warm the pools and the statement caches
            one_round(storage, "together", 200)
            if args.profile:
                for mode in MODES:
                    profile = cProfile.Profile(time.process_time)
                    fill(storage, args.jobs)
                    profile.runcall(MODES[mode], storage, args.jobs)
                    print(f"== {mode}")
                    pstats.Stats(profile).sort_stats("tottime").print_stats(25)
                return
            results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
            for _ in range(args.repeat):
                for mode in MODES:
                    results[mode].append(one_round(storage, mode, args.jobs))
            for mode, rounds in results.items():
                cpus = [c * 1e6 for c, _ in rounds]
                walls = [w * 1e6 for _, w in rounds]
                print(
                    f"{args.backend} {mode:9} client CPU/job {statistics.median(cpus):6.0f} µs "
                    f"({min(cpus):.0f}-{max(cpus):.0f})   wall/job "
                    f"{statistics.median(walls):6.0f} µs ({min(walls):.0f}-{max(walls):.0f})"
                )
        finally:
            storage.destroy()
            storage.close()


if __name__ == "__main__":
    main()
