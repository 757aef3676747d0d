"""benchmarks.finishcost: both drains run every job exactly once (their own asserts), on SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import finishcost
from exqueue_sql import SQLStorage

ROOT = Path(__file__).resolve().parents[2]


def test_each_mode_drains_the_store(tmp_path: Path) -> None:
    for mode in finishcost.MODES:
        storage = SQLStorage(f"sqlite:///{tmp_path / mode}.db")
        try:
            finishcost.fill(storage, 30)
            finishcost.MODES[mode](storage, 30)
            assert storage.counts(finishcost.NOW) == {}
            # A drain of more jobs than are stored fails loudly.
            finishcost.fill(storage, 2)
            with pytest.raises(AssertionError):
                finishcost.MODES[mode](storage, 3)
        finally:
            storage.close()


def test_the_command_prints_a_line_per_mode() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.finishcost", "--backend", "sqlite"]
        + ["--jobs", "20", "--repeat", "1"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["sqlite", "split"], ["sqlite", "together"]]
