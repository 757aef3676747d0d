"""``exqueue jobs --tag`` reads in bounds where the store can (capability job_scan):
a listing that ends its read before ``--limit`` jobs match says where it stopped,
and following ``--after-seq`` lists every match exactly once. A store without
job_scan lists as before. In-process, on an app's memory store (``--app``)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import Result

import exqueue
from exqueue.storage_scan import JOB_SCAN
from tests.support.cli import app_module, run_app

APP = "exqueue_cli_tag_scan_app"


@pytest.fixture
def queue() -> Iterator[exqueue.Queue]:
    with app_module(APP) as queue:
        yield queue


def enqueue_seven(queue: exqueue.Queue) -> list[str]:
    """Jobs of seq 1 to 7; those of seq 2, 6 and 7 have ``customer=42``."""

    @queue.worker(name="cli.scan")
    def report(n: int) -> None: ...

    return [
        report.options(meta={"customer": "42" if n in (2, 6, 7) else "7"}).enqueue(n)
        for n in range(1, 8)
    ]


def listed(*args: str) -> tuple[list[str], str]:
    """The ids ``exqueue jobs ARGS --json`` lists, and its stderr."""
    result: Result = run_app(APP, "jobs", *args, "--json")
    assert result.exit_code == 0, result.output
    return [job["id"] for job in json.loads(result.stdout)], result.stderr


def test_a_tag_listing_stops_at_the_budget_and_continues_after_seq(
    queue: exqueue.Queue,
) -> None:
    ids = enqueue_seven(queue)
    tag = ("--tag", "customer=42", "--scan-budget", "3")
    assert listed(*tag) == (
        [ids[1]],
        "searched up to 3 jobs (to seq 3) and found 1; continue with --after-seq 3\n",
    )
    assert listed(*tag, "--after-seq", "3") == (
        [ids[5]],
        "searched up to 3 jobs (to seq 6) and found 1; continue with --after-seq 6\n",
    )
    assert listed(*tag, "--after-seq", "6") == ([ids[6]], "")  # the end: nothing to add
    assert listed(*tag, "--limit", "1") == ([ids[1]], "")  # a full listing is not partial
    # The table says nothing matched among the jobs read, not that none exist.
    table = run_app(APP, "jobs", "--tag", "customer=none", "--scan-budget", "3")
    assert table.stdout == "no jobs among those searched\n"
    assert "continue with --after-seq 3" in table.stderr
    # Without a tag, --after-seq is a plain cursor.
    assert listed("--after-seq", "5") == (ids[5:], "")


def test_a_store_without_job_scan_reads_until_the_limit(
    queue: exqueue.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = enqueue_seven(queue)
    capabilities = queue.storage.capabilities - {JOB_SCAN}
    monkeypatch.setattr(queue.storage, "capabilities", capabilities)
    tag = ("--tag", "customer=42", "--scan-budget", "1")
    assert listed(*tag) == ([ids[1], ids[5], ids[6]], "")
    assert listed(*tag, "--after-seq", "2", "--limit", "1") == ([ids[5]], "")
