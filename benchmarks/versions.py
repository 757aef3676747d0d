"""Two versions of exqueue side by side in one run: did a change cost enqueue or drain speed?

    python -m benchmarks.versions [--before c524ee1] [--after WORKTREE] [--jobs 5000]
        [--repeat 3] [--only sqlite,postgres,mysql,redis,memory]

``--before`` is a git revision, exported with ``git archive`` into a temporary
directory; ``--after`` is a directory holding exqueue (the working tree by
default). Each measurement runs ``benchmarks/versions_child.py`` in a fresh
process with ``PYTHONPATH`` at that version's tree, so both versions run the
same script, the same job body (no-op), the same concurrency and the same
server, on a store of their own. Runs interleave (before, after, before, ...)
so a machine getting busier weighs on both; the table shows medians with the
min-max of each figure and the after/before ratio of the medians. Each figure
comes twice: per wall second, and per CPU second of the measuring process
(``_cpu``), which a loaded machine disturbs far less.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.services import MYSQL_URL, POSTGRES_URL, REDIS_URL

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "versions_child.py"
BACKENDS = {
    "memory": "memory://",
    "sqlite": "sqlite",  # a file in a fresh temporary directory, made by the child
    "postgres": POSTGRES_URL,
    "mysql": MYSQL_URL,
    "redis": REDIS_URL,
}
FIGURES = (
    "enqueue",
    "enqueue_many",
    "drain",
    "enqueue_cpu",
    "enqueue_many_cpu",
    "drain_cpu",
)


def export(revision: str, into: str) -> str:
    """The tree of ``revision`` written into ``into`` (a ``git archive`` of the repository)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return into


def measure(tree: str, url: str, jobs: int, concurrency: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": tree}
    spec = json.dumps({"url": url, "jobs": jobs, "concurrency": concurrency})
    done = subprocess.run(
        [sys.executable, str(CHILD), spec], env=env, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        raise RuntimeError(f"child failed on {url} with tree {tree}:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="c524ee1", help="git revision (default: v1)")
    parser.add_argument("--after", default=str(ROOT), help="directory of the newer tree")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default=",".join(BACKENDS))
    args = parser.parse_args(argv)
    names = [name for name in args.only.split(",") if name]
    unknown = [name for name in names if name not in BACKENDS]
    if unknown:
        parser.error(f"unknown backend(s) {unknown}; choose from {sorted(BACKENDS)}")

    with tempfile.TemporaryDirectory(prefix="exq-before-") as before_dir:
        trees = {"before": export(args.before, before_dir), "after": args.after}
        runs: dict[tuple[str, str], list[dict[str, float]]] = {}
        for _ in range(args.repeat):
            for name in names:
                for version in ("before", "after"):
                    figures = measure(trees[version], BACKENDS[name], args.jobs, args.concurrency)
                    runs.setdefault((name, version), []).append(figures)
                    print(f"{name:9} {version:6} {figures}", file=sys.stderr, flush=True)

    print(
        f"\n{args.jobs} jobs, concurrency {args.concurrency}, {args.repeat} interleaved runs; "
        f"before = {args.before}, after = {args.after}; jobs per second (wall, or CPU "
        "for _cpu), median (min-max)\n"
    )
    print("| backend | figure | before | after | after/before |")
    print("| --- | --- | --- | --- | --- |")
    for name in names:
        for figure in FIGURES:
            cells: list[Any] = []
            medians = []
            for version in ("before", "after"):
                values = [run[figure] for run in runs[(name, version)]]
                med = statistics.median(values)
                medians.append(med)
                cells.append(f"{med:,.0f} ({min(values):,.0f}-{max(values):,.0f})")
            ratio = medians[1] / medians[0] if medians[0] else float("nan")
            print(f"| {name} | {figure} | {cells[0]} | {cells[1]} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
