"""benchmarks.instructions: its child runs each phase on the tree it is given, and the
per-job figure is the difference between two sizes (valgrind itself is not run here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import instructions

ROOT = Path(__file__).resolve().parents[2]


def test_the_child_runs_every_phase_and_checks_the_drain() -> None:
    spec = json.dumps({"url": "memory://", "jobs": 7, "phases": "enqueue,drain,enqueue_many"})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(instructions.CHILD), spec], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    # Two enqueues with one drain between them: the second drain would find 14, not 7.
    spec = json.dumps({"url": "memory://", "jobs": 7, "phases": "enqueue,enqueue_many,drain"})
    done = subprocess.run(
        [sys.executable, str(instructions.CHILD), spec], env=env, capture_output=True, text=True
    )
    assert done.returncode != 0 and "drained 14 jobs, expected 7" in done.stderr


def test_per_job_is_the_difference_between_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    counts = {("enqueue", 10): 1_000, ("enqueue", 30): 3_000}
    counts |= {("enqueue_many,drain", 10): 5_000, ("enqueue_many,drain", 30): 9_000}
    counts |= {("enqueue_many", 10): 2_000, ("enqueue_many", 30): 4_000}

    threads: list[int] = []

    def fake(tree: str, url: str, phases: str, jobs: int, concurrency: int = 8) -> int:
        threads.append(concurrency)
        return counts[(phases, jobs)]

    monkeypatch.setattr(instructions, "instructions", fake)
    assert instructions.per_job("t", "memory://", "enqueue", 10, 30) == 100
    assert instructions.per_job("t", "memory://", "enqueue_many", 10, 30) == 100
    assert instructions.per_job("t", "memory://", "drain", 10, 30) == 100  # (4000-2000)/20
    threads.clear()
    assert instructions.per_job("t", "memory://", "drain", 10, 30, concurrency=1) == 100
    assert threads[:2] == [1, 1], "the drain runs at the concurrency asked for"
