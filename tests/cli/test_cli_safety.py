"""The ``exqueue`` command's safety edges, in subprocesses over SQLite files.

Stored texts come from job code, so terminal escapes in them must not reach the
operator's terminal; bad ``--limit`` values are usage errors; a non-default table
prefix is reachable; and ``EXQUEUE_URL`` in the environment does not stop a worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import exqueue
from exqueue_redis import RedisStorage
from exqueue_sql import SQLStorage
from tests.support import services
from tests.support.cli import cli

EVIL_NAME = "evil\x1b[31m.name\x9b"
EVIL_ERROR = "boom \x1b]0;pwned\x07 and \x1b[31mred\x7f"


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'safety.db'}"


def test_escapes_in_errors_and_worker_names_are_shown_not_sent(url: str) -> None:
    queue = exqueue.Queue(url)

    @queue.worker(name=EVIL_NAME, max_retries=0)
    def evil() -> None:
        raise RuntimeError(EVIL_ERROR)

    job_id = evil.enqueue()
    queue.drain()
    queue.storage.close()

    outputs = [
        cli("jobs", "--storage", url),
        cli("show", job_id, "--storage", url),
        cli("stats", "--storage", url),
    ]
    for result in outputs:
        assert result.returncode == 0, result.stderr
        for raw in ("\x1b", "\x07", "\x7f", "\x9b"):
            assert raw not in result.stdout, (raw, result.stdout)
    assert "\\x1b]0;pwned\\x07" in outputs[1].stdout
    assert "evil\\x1b[31m.name\\x9b" in outputs[0].stdout
    assert "evil\\x1b[31m.name" in outputs[2].stdout

    # --json stays exact: the parsed value is the stored text, escaped only as JSON.
    listed = cli("jobs", "--json", "--storage", url)
    for raw in ("\x1b", "\x07", "\x7f", "\x9b"):
        assert raw not in listed.stdout, raw
    parsed = json.loads(listed.stdout)
    assert parsed[0]["worker"] == EVIL_NAME and EVIL_ERROR in parsed[0]["last_error"]
    stats = cli("stats", "--json", "--storage", url)
    assert "\x1b" not in stats.stdout and EVIL_NAME in json.loads(stats.stdout)


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_a_limit_below_one_is_a_usage_error(url: str, limit: str) -> None:
    result = cli("jobs", "--limit", limit, "--storage", url)
    assert result.returncode == 2
    assert "--limit" in result.stderr and result.stdout == ""


def test_prefix_reaches_jobs_under_a_non_default_table_prefix(url: str) -> None:
    queue = exqueue.Queue(SQLStorage(url, prefix="x_"))
    queue.worker(name="app.prefixed")(lambda: None)
    job_id = queue.enqueue_many([exqueue.Call("app.prefixed")])[0]
    queue.storage.close()

    found = cli("jobs", "--prefix", "x_", "--storage", url)
    assert found.returncode == 0, found.stderr
    assert job_id in found.stdout and "app.prefixed" in found.stdout
    # Without the prefix: no store there, which a read-only command reports, creating none.
    other = cli("jobs", "--storage", url)
    assert other.returncode != 0 and "'exqueue_jobs'" in other.stderr, other.stderr
    shown = json.loads(cli("show", job_id, "--json", "--prefix", "x_", "--storage", url).stdout)
    assert shown["id"] == job_id


APP = """
from pathlib import Path
import exqueue

queue = exqueue.Queue({url!r}, poll_interval=0.1)

@queue.worker(name="app.touch")
def touch(path: str) -> None:
    Path(path).write_text("done")
"""


def run_worker_with_env(tmp_path: Path, url: str, env_url: str) -> subprocess.CompletedProcess[str]:
    """Start ``exqueue worker --app`` with ``EXQUEUE_URL`` set, let it run one job, stop it."""
    (tmp_path / "safetyapp.py").write_text(APP.format(url=url))
    marker = tmp_path / "marker"
    queue = exqueue.Queue(url)
    queue.worker(name="app.touch")(lambda path: None)
    queue.enqueue_many([exqueue.Call("app.touch", (str(marker),))])
    queue.storage.close()
    env = dict(os.environ, EXQUEUE_URL=env_url)
    env.pop("EXQUEUE_APP", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "exqueue", "worker", "--app", "safetyapp:queue"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert marker.exists(), err
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_worker_runs_when_the_environment_url_names_the_apps_store(
    tmp_path: Path, url: str
) -> None:
    result = run_worker_with_env(tmp_path, url, url)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr and "error" not in result.stderr


def test_worker_warns_but_runs_when_the_environment_url_names_another_store(
    tmp_path: Path, url: str
) -> None:
    other = f"sqlite:///{tmp_path / 'other.db'}"
    result = run_worker_with_env(tmp_path, url, other)
    assert result.returncode == 0, result.stderr
    assert "warning" in result.stderr and "other.db" in result.stderr


def test_worker_still_refuses_an_explicit_storage_with_app(tmp_path: Path, url: str) -> None:
    (tmp_path / "safetyapp.py").write_text(APP.format(url=url))
    result = subprocess.run(
        [sys.executable, "-m", "exqueue", "worker", "--app", "safetyapp:queue", "--storage", url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 1 and "drop --storage" in result.stderr


def test_namespace_reaches_jobs_under_a_non_default_redis_namespace() -> None:
    redis_url = services.require("redis")
    namespace = f"cli-{uuid.uuid4().hex}"
    queue = exqueue.Queue(RedisStorage(redis_url, namespace=namespace))
    queue.worker(name="app.spaced")(lambda: None)
    job_id = queue.enqueue_many([exqueue.Call("app.spaced")])[0]
    try:
        found = cli("jobs", "--namespace", namespace, "--storage", redis_url)
        assert found.returncode == 0, found.stderr
        assert job_id in found.stdout and "app.spaced" in found.stdout
        other = cli("jobs", "--namespace", f"{namespace}-other", "--storage", redis_url)
        assert other.stdout.strip() == "no jobs"
    finally:
        queue.delete(job_id)
        queue.storage.close()
