"""A tiny application module the process tests write into a temporary folder and run.

``write_app(tmp_path)`` writes ``procapp.py`` (SQLite in ``tmp_path``; jobs append
lines to ``out.txt``) and returns the environment to run it with; ``lines``
reads what the jobs recorded; ``wait_until`` polls for a condition; ``stop_all``
stops child processes gracefully (SIGTERM), killing any that outlive the wait.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path

APP = textwrap.dedent(
    """
    import os, time
    import exqueue

    queue = exqueue.Queue(os.environ["APP_URL"], node=os.environ.get("APP_NODE"),
                          lease=float(os.environ.get("APP_LEASE", "30")), poll_interval=0.05)
    OUT = os.environ["APP_OUT"]

    def record(line):
        # O_APPEND writes of one short line are atomic, so processes can share the file.
        fd = os.open(OUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, (line + "\\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    @queue.worker(name="app.record", concurrency=4)
    def record_job(n):
        record(f"{os.getpid()} {n}")

    @queue.worker(name="app.slow", concurrency=1)
    def slow(n):
        record(f"start {n}")
        time.sleep(float(os.environ.get("APP_SLOW", "0")))
        record(f"done {n}")
    """
)


def write_app(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "procapp.py").write_text(APP)
    env = dict(os.environ)
    env.update(
        APP_URL=f"sqlite:///{tmp_path / 'jobs.db'}",
        APP_OUT=str(tmp_path / "out.txt"),
        PYTHONPATH=os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")]),
    )
    return env


def lines(tmp_path: Path) -> list[str]:
    path = tmp_path / "out.txt"
    return path.read_text().splitlines() if path.exists() else []


def wait_until(condition: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def stop_all(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    """SIGTERM every running process, then wait up to ``timeout`` for each (kill past it)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
