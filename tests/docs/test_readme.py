"""The README's quick start and the demo run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def quick_start_code() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "the Quick start section has no python block"
    return match.group(1)


def test_quick_start_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "quick.py").write_text(quick_start_code())
    result = subprocess.run(
        [sys.executable, "quick.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "queued: waiting",
        "sending the welcome email to user 42 in sv",
        "after the run: None",
    ]
    assert len(quick_start_code().strip().splitlines()) <= 22


def test_demo_retries_one_job_to_success_and_leaves_one_dead(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "fetched invoice 1001 on attempt 3" in out
    assert "fetch_invoice job removed after success: True" in out
    assert "send_report job is dead after 3 attempts" in out
    assert "on_dead: demo.send_report" in out
    assert (tmp_path / "exqueue.db").exists(), "the demo uses the SQLite default ./exqueue.db"
    dead = subprocess.run(
        [sys.executable, "-m", "exqueue", "jobs", "--state", "dead"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dead.returncode == 0 and "demo.send_report" in dead.stdout


def test_periodic_jobs_example_runs_as_written(tmp_path: Path) -> None:
    import signal
    import time

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Periodic jobs", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "the Periodic jobs section has no python block"
    (tmp_path / "cron.py").write_text(match.group(1))
    out = tmp_path / "out.txt"
    with out.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "cron.py"], cwd=tmp_path, stdout=sink)
        try:
            deadline = time.monotonic() + 60
            while "report for eu (0 missed ticks)" not in out.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 0
    listed = out.read_text().splitlines()
    assert listed[0].startswith("__main__.nightly_cleanup | 0 3 * * * | ")
    assert listed[1].startswith("report-eu | every 2s | ")


def options_code() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Priorities, unique jobs, meta and expiry", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "the priorities and unique jobs section has no python block"
    return match.group(1)


def test_priorities_and_unique_jobs_example_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "options.py").write_text(options_code())
    result = subprocess.run(
        [sys.executable, "options.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "resizing b.png",
        "resizing a.png",
        "resizing c.png",
        "True True",
        "syncing user 42 for signup",
        "True True",
    ]


def test_async_jobs_example_runs_as_written(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Async jobs, timeouts, cancellation, snooze", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "the async jobs section has no python block"
    (tmp_path / "asyncjobs.py").write_text(match.group(1))
    result = subprocess.run(
        [sys.executable, "asyncjobs.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sorted(lines[:2]) == [
        "fetched https://example.com/a",
        "order 7 ready after 3 polls, attempt 1",
    ]
    assert lines[2:] == [
        "exqueue.errors.JobTimeout: timed out after 0.5 s",
        "cancelled dead",
    ]


def test_limits_example_runs_as_written(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Limits per customer, rate limits, pause", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "the limits section has no python block"
    (tmp_path / "limits.py").write_text(match.group(1))
    result = subprocess.run(
        [sys.executable, "limits.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "most at once: {'acme': 5, 'globex': 5}"
