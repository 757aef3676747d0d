"""Regenerate the reliability table in docs/reliability.md: every fault scenario on every backend.

    python benchmarks/reliability.py                      # full sizes, print the table
    python benchmarks/reliability.py --write              # ... and rewrite docs/reliability.md
    python benchmarks/reliability.py --backends sqlite redis --scenarios crash load \\
        --crash-jobs 2000 --load-jobs 50000

The scenarios are the ones ``tests/faults/test_faults.py`` runs at smaller sizes
(``benchmarks/faults_harness.py``); each checks its invariants and raises when one
breaks, which shows as FAILED in the table. A backend whose module does not
import or whose server does not answer is reported as skipped. The outage
scenario stops the local PostgreSQL and MariaDB servers for a few seconds (and
starts them again); Redis outages use a private redis-server on a free port.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import faults_harness as fh  # noqa: E402

DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- reliability:begin -->", "<!-- reliability:end -->"
SCENARIOS = ["crash", "node_loss", "stable", "stale", "outage", "poison", "graceful",
             "hostile", "load"]  # fmt: skip


def runners(args: argparse.Namespace) -> dict[str, Callable[[fh.Target], fh.Result]]:
    def hostile(target: fh.Target) -> fh.Result:
        marker = target.workdir / "unpickled"
        return fh.hostile(target, fh.hostile_payloads(marker, count=200, seed=args.seed), marker)

    return {
        "crash": lambda t: fh.crash(t, jobs=args.crash_jobs, kills=3, seed=args.seed),
        "node_loss": lambda t: fh.node_loss(t, jobs=60, lease=1.5),
        "stable": lambda t: fh.stable_reclaim(t, jobs=20, lease=60.0),
        "stale": lambda t: fh.stale_worker(t, lease=1.0),
        "outage": lambda t: fh.outage(t, jobs=args.outage_jobs, down=args.down),
        "poison": lambda t: fh.poison(t, max_retries=2, others=20),
        "graceful": fh.graceful,
        "hostile": hostile,
        "load": lambda t: fh.load(t, jobs=args.load_jobs, procs=4, seed=args.seed),
    }


def table(rows: list[tuple[str, str, fh.Result | str]]) -> str:
    lines = [
        "| scenario | backend | jobs | lost | duplicates | time | notes |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for scenario, backend, outcome in rows:
        if isinstance(outcome, fh.Result):
            r = outcome
            lines.append(
                f"| {r.scenario} | {backend} | {r.jobs:,} | {r.lost} | {r.duplicates} | "
                f"{r.seconds:.1f} s | {r.note} |"
            )
        else:
            lines.append(f"| {scenario} | {backend} | | | | | {outcome} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=list(fh.BACKENDS), choices=fh.BACKENDS)
    parser.add_argument("--scenarios", nargs="+", default=SCENARIOS, choices=SCENARIOS)
    parser.add_argument("--crash-jobs", type=int, default=2000)
    parser.add_argument("--outage-jobs", type=int, default=2000)
    parser.add_argument("--load-jobs", type=int, default=50_000)
    parser.add_argument("--down", type=float, default=4.0, help="seconds the storage is away")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--write", action="store_true", help=f"rewrite the table in {DOC}")
    args = parser.parse_args()

    # The hostile scenario buries hundreds of jobs in this process, each logged at ERROR.
    logging.getLogger("exqueue").setLevel(logging.CRITICAL)
    run = runners(args)
    rows: list[tuple[str, str, fh.Result | str]] = []
    failed = False
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="exqueue-reliability-") as tmp:
        for backend in args.backends:
            missing = fh.unavailable(backend)
            for scenario in args.scenarios:
                if missing:
                    rows.append((scenario, backend, f"skipped: {missing}"))
                    continue
                target = fh.make_target(backend, Path(tmp) / f"{backend}-{scenario}")
                print(f"{backend}: {scenario} ...", file=sys.stderr, flush=True)
                try:
                    result = run[scenario](target)
                except Exception as exc:  # one failed scenario must not hide the others
                    failed = True
                    traceback.print_exc()
                    rows.append((scenario, backend, f"**FAILED**: {exc!s:.200}".replace("\n", " ")))
                else:
                    rows.append((scenario, backend, result))
                    print(f"  {result}", file=sys.stderr, flush=True)
                finally:
                    target.destroy()
    rendered = table(rows)
    sizes = (
        f"Sizes: crash {args.crash_jobs:,} jobs, outage {args.outage_jobs:,} jobs "
        f"({args.down:g} s down), load {args.load_jobs:,} jobs; seed {args.seed}. "
        f"Machine: {platform.machine()}, Python {platform.python_version()}; "
        f"whole run {time.monotonic() - started:.0f} s."
    )
    print(rendered + "\n\n" + sizes)
    if args.write:
        text = DOC.read_text()
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        DOC.write_text(f"{head}{BEGIN}\n{rendered}\n\n{sizes}\n{END}{tail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
