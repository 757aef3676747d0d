"""Instructions per job of enqueue, batch enqueue and drain, for trees side by side (callgrind).

    python -m benchmarks.instructions --tree v1=/tmp/v1 --tree now=. [--only memory,sqlite]
        [--phases enqueue,enqueue_many,drain] [--small 500] [--large 2500] [--concurrency 8]

A shared machine makes wall and CPU seconds noisy; the number of instructions
the Python process executes is not (``valgrind --tool=callgrind``, hash seed
fixed). Each (tree, backend, phase) runs ``benchmarks/instructions_child.py``
twice, with ``--small`` and ``--large`` jobs; the difference divided by the
difference in jobs is the cost per job with start-up cancelled out. ``drain``
is measured as (batch enqueue + drain) minus batch enqueue, both of the same
size. A server's own work (PostgreSQL, MariaDB, Redis) is not in the figure;
a drain's worker threads are (callgrind runs them one at a time, so polling
may differ slightly between runs). ``--concurrency`` sets the drain's job
threads (comma-separated for several columns of rows).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.versions import BACKENDS

CHILD = Path(__file__).resolve().parent / "instructions_child.py"
PHASES = ("enqueue", "enqueue_many", "drain")


def instructions(tree: str, url: str, phases: str, jobs: int, concurrency: int = 8) -> int:
    """Instructions of one child run (``phases`` comma-separated, run in that order)."""
    with tempfile.TemporaryDirectory(prefix="exq-instr-") as tmp:
        out = os.path.join(tmp, "callgrind.out")
        env = {**os.environ, "PYTHONPATH": tree, "PYTHONHASHSEED": "0"}
        spec = json.dumps({"url": url, "jobs": jobs, "phases": phases, "concurrency": concurrency})
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
            + [sys.executable, str(CHILD), spec],
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"child failed on {url} with tree {tree}:\n{done.stderr[-3000:]}")
        with open(out) as f:
            for line in f:
                if line.startswith("summary:") or line.startswith("totals:"):
                    return int(line.split()[1])
    raise RuntimeError("no totals in the callgrind output")


def per_job(tree: str, url: str, phase: str, small: int, large: int, concurrency: int = 8) -> float:
    runs = {"drain": "enqueue_many,drain"}.get(phase, phase)
    cost = [instructions(tree, url, runs, n, concurrency) for n in (small, large)]
    if phase == "drain":
        base = [instructions(tree, url, "enqueue_many", n) for n in (small, large)]
        cost = [c - b for c, b in zip(cost, base, strict=True)]
    return (cost[1] - cost[0]) / (large - small)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="LABEL=DIRECTORY")
    parser.add_argument("--only", default="memory,sqlite")
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=2500)
    parser.add_argument("--concurrency", default="8", help="job threads of the drain")
    args = parser.parse_args(argv)
    trees = dict(item.split("=", 1) for item in args.tree)
    names = [n for n in args.only.split(",") if n]
    phases = [p for p in args.phases.split(",") if p]
    levels = [int(c) for c in args.concurrency.split(",")]
    print("| backend | phase | threads | " + " | ".join(trees) + " | last/first |")
    print("| --- | --- | --- |" + " --- |" * (len(trees) + 1))
    for name in names:
        for phase in phases:
            for threads in levels if phase == "drain" else levels[:1]:
                figures = [
                    per_job(t, BACKENDS[name], phase, args.small, args.large, threads)
                    for t in trees.values()
                ]
                ratio = figures[-1] / figures[0]
                cells = " | ".join(f"{f:,.0f}" for f in figures)
                shown = threads if phase == "drain" else "-"
                print(f"| {name} | {phase} | {shown} | {cells} | {ratio:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
