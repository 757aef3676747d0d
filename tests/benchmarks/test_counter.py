"""The harness's job counter and its CPU baseline survive a slot that reads as zeros.

On the benchmark machine a slot written through ``mmap`` now and then read back as
all zeros mid-run; taken as it read, that moved the CPU baseline into the run and
reported a fraction of the worker's real CPU. No worker and no services needed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from benchmarks import counter, cpu, run


def write_slot(path: Path, count: int, first: float = 1.0, end: float = 2.0) -> None:
    path.write_bytes(counter._SLOT.pack(count, first, end, count - 1, end))


def test_a_slot_that_reads_as_zeros_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slot = tmp_path / "101.slot"
    slot.write_bytes(b"\0" * counter._SLOT.size)
    write_slot(tmp_path / "102.slot", 5)
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        # The zeros last for less than the re-reads' span, as the glitch did.
        pauses.append(seconds)
        if len(pauses) == 2:
            write_slot(slot, 7)

    monkeypatch.setattr(counter, "_pause", pause)
    assert counter.read(str(tmp_path)).count == 12
    assert len(pauses) == 2


def test_a_process_that_ran_no_job_still_counts_zero(tmp_path: Path) -> None:
    (tmp_path / "101.slot").write_bytes(b"\0" * counter._SLOT.size)
    (tmp_path / "102.slot").write_bytes(b"\0" * 3)  # still being created: skipped
    write_slot(tmp_path / "103.slot", 4, first=3.0, end=9.0)
    totals = counter.read(str(tmp_path))
    assert (totals.count, totals.first_start, totals.last_end) == (4, 3.0, 9.0)


class Phase:
    """Counts read by ``watch`` in turn: a zero read after the run started included."""

    def __init__(self, counts: list[int]) -> None:
        self.counts: Iterator[int] = iter(counts)

    def totals(self) -> SimpleNamespace:
        return SimpleNamespace(count=next(self.counts))


def test_a_zero_count_in_the_run_does_not_move_the_cpu_baseline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    readings = iter(float(n) for n in range(100))  # the worker's CPU seconds, one per read
    monkeypatch.setattr(cpu, "seconds", lambda pid, pids=None: next(readings))
    monkeypatch.setattr(cpu, "tree", lambda pid: [pid])
    adapter: Any = SimpleNamespace(
        worker=SimpleNamespace(proc=SimpleNamespace(pid=os.getpid())),
        check_worker=lambda: None,
    )
    # Reads: 0 before the loop; then 1 and 2 with no job yet, 3 and 4 in the run
    # (4 reads as zero), 5 with every job done, 6 the final reading.
    base, end, _, _ = run.watch(adapter, Phase([0, 0, 3, 0, 10]), 10, 60.0)  # type: ignore[arg-type]
    assert (base, end) == (2.0, 6.0)
