"""The bounded-listing area must catch broken backends: a test of the checks.

Each backend here is the memory backend with one realistic violation of a
``scan_jobs`` rule; the area's check must reject each, and pass the memory
backend itself.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from conformance import run_suite
from conformance.profiles import get_settings
from conformance.scan import CHECKS
from exqueue.storage import JobScan, ScannedJobs
from exqueue_memory import MemoryStorage

NAMES = [check.name for check in CHECKS]
SETTINGS = get_settings("ci")


class IgnoresBudget(MemoryStorage):
    """Reads every candidate in one call (the unbounded scan the capability is for)."""

    def scan_jobs(self, scan: JobScan) -> ScannedJobs:
        return super().scan_jobs(replace(scan, budget=1_000_000))


class CursorPastBound(MemoryStorage):
    """Reports the next candidate's seq as the cursor: the one after the bound is skipped."""

    def scan_jobs(self, scan: JobScan) -> ScannedJobs:
        found = super().scan_jobs(scan)
        if found.next_after is None:
            return found
        return ScannedJobs(found.jobs, found.next_after + 1)


class CursorAtBoundWhenFull(MemoryStorage):
    """Stops at ``limit`` matches but reports the budget's bound: the matches between are lost."""

    def scan_jobs(self, scan: JobScan) -> ScannedJobs:
        found = super().scan_jobs(scan)
        if len(found.jobs) < scan.limit:
            return found
        wide = super().scan_jobs(replace(scan, limit=scan.budget))
        return ScannedJobs(found.jobs, wide.next_after)


class DropsLastRead(MemoryStorage):
    """Off by one at the budget's edge: filters all but the last candidate read, yet
    reports that one's seq as the cursor."""

    def scan_jobs(self, scan: JobScan) -> ScannedJobs:
        found = super().scan_jobs(scan)
        if found.next_after is None or len(found.jobs) >= scan.limit:
            return found
        return ScannedJobs(
            tuple(r for r in found.jobs if r.seq != found.next_after), found.next_after
        )


@pytest.mark.parametrize(
    "broken", [IgnoresBudget, CursorPastBound, CursorAtBoundWhenFull, DropsLastRead]
)
def test_broken_scan_backend_is_caught(broken: type[MemoryStorage]) -> None:
    failures = run_suite(broken, SETTINGS, only=NAMES)
    assert "scan_pages" in failures, f"{broken.__name__} passed: {sorted(failures)}"
    assert str(failures["scan_pages"]).startswith("rule broken: ")


def test_memory_backend_passes() -> None:
    assert run_suite(MemoryStorage, SETTINGS, only=NAMES) == {}
