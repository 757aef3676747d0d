"""Where exqueue spends its time: py-spy profiles of enqueue and drain per backend.

    python -m benchmarks.profile [--backends memory,sqlite,postgres,mariadb,redis]
                                 [--phases enqueue,batch,drain] [--jobs 5000] [--top 15]

Each (backend, phase) runs in a child process under ``py-spy record`` (all
threads, idle ones left out), and the collapsed stacks are summed per function:
``self`` is time at the top of the stack, ``total`` anywhere in it. The raw
stacks stay in ``--out`` (default ``/tmp/exqbench-profiles``) for flame graphs
(``py-spy`` raw format, readable by speedscope or flamegraph.pl).
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
from typing import Any

from benchmarks import common


def workload(backend: str, phase: str, jobs: int) -> None:
    """The profiled child: set up, then run ``phase`` on ``jobs`` jobs."""
    import tempfile

    from benchmarks import counter
    from benchmarks.exq import ADAPTERS

    counter.reset_in_process(tempfile.mkdtemp(prefix="exqbench-prof-"))
    adapter = next(cls for cls in ADAPTERS if cls.backend == backend)()
    adapter.setup()
    try:
        if phase == "drain":
            _prefill(adapter, jobs)
        _measured(adapter, phase, jobs)
    finally:
        adapter.teardown()


def _prefill(adapter: Any, jobs: int) -> None:
    for start in range(0, jobs, 1000):
        adapter.enqueue_batch(range(start, min(start + 1000, jobs)))


def _measured(adapter: Any, phase: str, jobs: int) -> None:
    if phase == "enqueue":
        for i in range(jobs):
            adapter.enqueue_one(i)
    elif phase == "batch":
        for start in range(0, jobs, 1000):
            adapter.enqueue_batch(range(start, min(start + 1000, jobs)))
    else:
        adapter.drain(8)


#: Stacks through these frames are set-up, not the measured phase (drain's
#: worker threads have no main-thread frame, so the filter is by exclusion).
#: Leaf frames that are a thread blocked, not working (py-spy cannot always tell).
_IDLE = (
    "Condition.wait ",
    "Event.wait ",
    "_wait_for_tstate_lock ",
    "select ",
    "poll ",
    "SimpleQueue.get ",
    "_worker (concurrent",
    "wait (threading",
)
_EXCLUDE = ("ExqueueAdapter.setup ", "ExqueueAdapter.teardown ", "_prefill ", "_find_and_load ")


def summarize(path: str, top: int) -> str:
    self_time: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = idle = 0
    with open(path) as f:
        for line in f:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            count = int(count_text)
            frames = [fr for fr in stack.split(";") if not fr.startswith(("process ", "thread "))]
            if not frames or any(fr.startswith(_EXCLUDE) for fr in frames):
                continue
            if frames[-1].startswith(_IDLE):
                idle += count
                continue
            samples += count
            self_time[_short(frames[-1])] += count
            for name in {_short(fr) for fr in frames}:
                total[name] += count
    lines = [f"{samples} busy samples ({idle} more blocked in waits, left out)"]
    lines.append("  self%  total%  function")
    for name, count in self_time.most_common(top):
        lines.append(f"  {100 * count / samples:5.1f}  {100 * total[name] / samples:6.1f}  {name}")
    lines.append("  -- by total (exqueue code only) --")
    ours = [(n, c) for n, c in total.most_common() if "exqueue" in n or "benchmarks" in n]
    for name, count in ours[:top]:
        lines.append(
            f"  {100 * self_time[name] / samples:5.1f}  {100 * count / samples:6.1f}  {name}"
        )
    return "\n".join(lines)


def _short(frame: str) -> str:
    """``fn (/long/path/site-packages/pkg/mod.py:123)`` -> ``fn (pkg/mod.py)``."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})"


def main(argv: list[str] | None = None) -> int:
    parser = common.arguments("benchmarks.profile", __doc__)
    parser.add_argument("--backends", default="memory,sqlite,postgres,mariadb,redis")
    parser.add_argument("--phases", default="enqueue,batch,drain")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", default="/tmp/exqbench-profiles")
    parser.add_argument("--child", nargs=2, metavar=("BACKEND", "PHASE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        workload(args.child[0], args.child[1], args.jobs)
        return 0
    common.ensure_databases()
    os.makedirs(args.out, exist_ok=True)
    for backend in args.backends.split(","):
        for phase in args.phases.split(","):
            raw = os.path.join(args.out, f"{backend}-{phase}.txt")
            subprocess.run(
                [
                    common.venv_bin("py-spy"),
                    "record",
                    "--format",
                    "raw",
                    "--threads",
                    "--rate",
                    str(args.rate),
                    "--output",
                    raw,
                    "--",
                    common.python(),
                    "-m",
                    "benchmarks.profile",
                    "--child",
                    backend,
                    phase,
                    "--jobs",
                    str(args.jobs),
                ],
                check=True,
                cwd=common.ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            print(f"== exqueue {phase} on {backend} ({args.jobs:,} jobs) ==")
            print(summarize(raw, args.top))
            print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
