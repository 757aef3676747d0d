"""The ``exqueue`` command end to end, in subprocesses, over a SQLite file.

The CLI never imports the application here: it reads jobs through the URL.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import exqueue
from tests.support.cli import cli


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def dead_ids(url: str) -> list[str]:
    queue = exqueue.Queue(url)

    @queue.worker(name="app.broken", max_retries=0)
    def broken(n: int) -> None:
        raise ValueError(f"bad input {n}")

    queue.worker(name="app.fine")(lambda: None)
    ids = [broken.enqueue(n) for n in range(3)]
    queue.drain()
    queue.enqueue_many([exqueue.Call("app.fine")])
    queue.storage.close()
    return ids


def test_jobs_lists_dead_jobs_as_a_table_and_as_json(url: str, dead_ids: list[str]) -> None:
    table = cli("jobs", "--state", "dead", "--storage", url)
    assert table.returncode == 0, table.stderr
    for job_id in dead_ids:
        assert job_id in table.stdout
    assert "ValueError: bad input 0" in table.stdout
    assert "app.fine" not in table.stdout

    listed = json.loads(cli("jobs", "--state", "dead", "--json", "--storage", url).stdout)
    assert [job["id"] for job in listed] == dead_ids
    assert {job["state"] for job in listed} == {"dead"}
    assert listed[0]["args"] == ["0"] and listed[0]["attempt"] == 1


def test_show_prints_arguments_and_errors(url: str, dead_ids: list[str]) -> None:
    shown = cli("show", dead_ids[1], "--storage", url)
    assert shown.returncode == 0, shown.stderr
    assert "app.broken" in shown.stdout and "ValueError: bad input 1" in shown.stdout
    as_json = json.loads(cli("show", dead_ids[1], "--json", "--storage", url).stdout)
    assert as_json["id"] == dead_ids[1] and as_json["state"] == "dead"


def test_retry_and_delete_by_id_through_the_environment_url(url: str, dead_ids: list[str]) -> None:
    env = dict(os.environ, EXQUEUE_URL=url)
    retried = cli("retry", dead_ids[0], env=env)
    assert retried.returncode == 0, retried.stderr
    old, new = retried.stdout.split(" -> ")
    assert old == dead_ids[0]
    deleted = cli("delete", dead_ids[1], env=env)
    assert deleted.returncode == 0 and f"deleted {dead_ids[1]}" in deleted.stdout

    queue = exqueue.Queue(url)
    job = queue.get(new.strip())
    assert job is not None and (job.state, job.attempt) == ("waiting", 0)
    assert queue.get(dead_ids[1]) is None
    assert [j.id for j in queue.jobs(state="dead")] == [dead_ids[2]]


def test_retry_all_dead_and_stats(url: str, dead_ids: list[str]) -> None:
    before = json.loads(cli("stats", "--json", "--storage", url).stdout)
    assert before["app.broken"] == {
        "waiting": 0,
        "scheduled": 0,
        "running": 0,
        "dead": 3,
        "paused": False,
    }
    assert before["app.fine"]["waiting"] == 1
    done = cli("retry", "--all-dead", "--worker", "app.broken", "--storage", url)
    assert done.returncode == 0 and "re-queued 3 dead jobs" in done.stdout
    after = json.loads(cli("stats", "--json", "--storage", url).stdout)
    assert after["app.broken"] == {
        "waiting": 3,
        "scheduled": 0,
        "running": 0,
        "dead": 0,
        "paused": False,
    }
    table = cli("stats", "--storage", url)
    assert "app.broken" in table.stdout and "waiting" in table.stdout


def test_unknown_id_bad_url_and_missing_app_give_one_clear_line(
    url: str, dead_ids: list[str]
) -> None:
    for args, expected in [
        (("show", "nope", "--storage", url), "no job with id 'nope'"),
        (("retry", "nope", "--storage", url), "no job with id 'nope'"),
        (("delete", "nope", "--storage", url), "no job with id 'nope'"),
        (("jobs", "--storage", "nonsense"), "has no scheme"),
        (("jobs", "--storage", "ftp://x"), "no storage backend registered for scheme 'ftp'"),
        (("worker", "--app", "no_such_module:queue"), "cannot import app module"),
        (("worker",), "worker needs the application"),
    ]:
        result = cli(*args)
        assert result.returncode != 0, args
        err_lines = result.stderr.strip().splitlines()
        assert len(err_lines) == 1 and expected in err_lines[0], (args, result.stderr)
