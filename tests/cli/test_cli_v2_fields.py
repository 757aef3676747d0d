"""The CLI shows protocol-2 fields: ``show`` prints priority, meta, timeout,
expiry and unique key; ``jobs --tag KEY=VALUE`` filters by meta; ``--json``
carries every field. Run in-process on an app's memory store (``--app``), and
as an operator runs it, in a child process over SQLite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import exqueue
from exqueue.cli import main
from tests.support.cli import app_module, cli, run_app

APP = "exqueue_cli_v2_app"


@pytest.fixture
def queue() -> Iterator[exqueue.Queue]:
    with app_module(APP) as queue:
        yield queue


def run(*args: str) -> Result:
    return run_app(APP, *args)


def register(queue: exqueue.Queue) -> exqueue.WorkerType[[int], None]:
    @queue.worker(name="cli.report", meta={"team": "billing"})
    def report(n: int) -> None: ...

    return report


def test_show_prints_the_new_fields(queue: exqueue.Queue) -> None:
    report = register(queue)
    job_id = report.options(
        priority=-3, unique="report-1", meta={"trace": "t\x1b1"}, timeout=90, expires_in=600
    ).enqueue(1)
    result = run("show", job_id)
    assert result.exit_code == 0, result.output
    lines = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in result.output.splitlines()}
    assert lines["priority"] == "-3"
    assert lines["unique_key"] == "report-1"
    assert lines["timeout"] == "90s"
    assert lines["meta"] == "team=billing, trace=t\\x1b1"  # control characters escaped
    assert lines["expires_at"].startswith("2023-11-14T22:")  # FakeClock start + 600 s, UTC

    plain = report.enqueue(2)
    shown = run("show", plain).output
    assert "priority" in shown and "unique_key" not in shown and "expires_at" not in shown


def test_json_carries_every_field(queue: exqueue.Queue) -> None:
    report = register(queue)
    job_id = report.options(priority=2, unique=True, timeout=5).enqueue(7)
    shown = json.loads(run("show", job_id, "--json").output)
    assert shown["priority"] == 2 and shown["timeout"] == 5.0
    assert shown["meta"] == {"team": "billing"} and shown["unique_key"] == '{"n":7}'
    assert shown["expires_at"] is None
    [listed] = json.loads(run("jobs", "--json").output)
    assert listed == shown | {"running_for": None, "running_for_at_most": None}


def test_jobs_filters_by_tag_and_shows_priority_only_when_set(queue: exqueue.Queue) -> None:
    report = register(queue)
    first = report.options(meta={"customer": "42"}).enqueue(1)
    second = report.options(meta={"customer": "7=8"}).enqueue(2)
    listed = run("jobs", "--tag", "customer=42").output
    assert first in listed and second not in listed and "priority" not in listed
    assert second in run("jobs", "--tag", "customer=7=8").output  # split at the first "="
    assert run("jobs", "--tag", "customer=none").output.strip() == "no jobs"
    tagged = json.loads(run("jobs", "--tag", "team=billing", "--json").output)
    assert [job["id"] for job in tagged] == [first, second]
    report.options(priority=5).enqueue(3)
    table = run("jobs").output.splitlines()
    assert table[0].split()[:5] == ["id", "worker", "state", "priority", "attempt"]
    assert [line.split()[3] for line in table[2:]] == ["0", "0", "5"]


def test_a_malformed_tag_is_refused(queue: exqueue.Queue) -> None:
    register(queue)
    result = CliRunner().invoke(main, ["jobs", "--tag", "customer", "--app", f"{APP}:queue"])
    assert result.exit_code == 1
    assert "--tag must look like KEY=VALUE" in result.output


def test_an_operator_sees_the_fields_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    queue = exqueue.Queue(url)

    @queue.worker(name="cli.sql", priority=2, meta={"team": "ops"})
    def job(n: int) -> None: ...

    first = job.options(unique=True, expires_in=3600, timeout=30).enqueue(1)
    second = job.options(meta={"team": "web"}).enqueue(2)
    queue.close()
    listed = cli("jobs", "--tag", "team=ops", "--storage", url)
    assert listed.returncode == 0, listed.stderr
    assert first in listed.stdout and second not in listed.stdout
    assert "priority" in listed.stdout.splitlines()[0]
    shown = cli("show", first, "--storage", url)
    assert shown.returncode == 0, shown.stderr
    for text in ("unique_key", '{"n":1}', "expires_at", "30s", "team=ops"):
        assert text in shown.stdout, text
    as_json = json.loads(cli("show", second, "--json", "--storage", url).stdout)
    assert (as_json["priority"], as_json["meta"]) == (2, {"team": "web"})
