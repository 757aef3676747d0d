"""The catch table of the conformance suite: how often it rejects each broken backend.

Runs the power tests (``tests/conformance/test_conformance_power.py``: the whole suite with
the ``ci`` profile, and the targeted check on its own) RUNS times, each with its
own ``--hypothesis-seed``, and prints, per broken backend, in how many runs the
suite and its targeted check caught it, as a Markdown table::

    .venv/bin/python benchmarks/conformance_catch.py [RUNS]   # default 10
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import time

TESTS = "test_suite_fails_on_broken_backend|test_targeted_check_finds_the_bug"
LINE = re.compile(rf"::({TESTS})\[(.*)\] (PASSED|FAILED)")


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    caught: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    started = time.monotonic()
    for seed in range(1, runs + 1):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-v",
                "-p",
                "no:cacheprovider",
                f"--hypothesis-seed={seed}",
                "tests/conformance/test_conformance_power.py",
                "-k",
                "suite_fails or targeted",
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        for test, bug, verdict in LINE.findall(out):
            caught[bug][test] += verdict == "PASSED"
        print(f"run {seed}/{runs} done after {time.monotonic() - started:.0f} s", file=sys.stderr)
    print("| broken backend | suite (ci) | targeted check |\n| --- | --- | --- |")
    for bug, row in caught.items():
        print(
            f"| {bug} | {row['test_suite_fails_on_broken_backend']}/{runs} "
            f"| {row['test_targeted_check_finds_the_bug']}/{runs} |"
        )


if __name__ == "__main__":
    main()
