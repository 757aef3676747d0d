"""Real OS processes over one SQLite file: exactly-once under a held lease, and SIGKILL.

Each test writes a tiny application module into a temporary folder and runs it
in subprocesses, as a user's deployment would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import exqueue

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


def test_two_processes_drain_the_same_sqlite_jobs_exactly_once(tmp_path: Path) -> None:
    env = write_app(tmp_path)
    queue = exqueue.Queue(env["APP_URL"])
    queue.worker(name="app.record")(lambda n: None)
    total = 2000
    queue.enqueue_many([exqueue.Call("app.record", (n,)) for n in range(total)])
    # Both start draining together, however long each takes to start up: one
    # process alone can drain 2,000 jobs before the other has imported exqueue.
    drain = (
        "import os, pathlib, time, procapp\n"
        "ready = pathlib.Path('ready'); ready.mkdir(exist_ok=True)\n"
        "(ready / str(os.getpid())).touch()\n"
        "deadline = time.monotonic() + 60\n"
        "while len(list(ready.iterdir())) < 2 and time.monotonic() < deadline:\n"
        "    time.sleep(0.005)\n"
        "procapp.queue.drain()\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", drain], env=env, cwd=tmp_path) for _ in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0
    records = [line.split() for line in lines(tmp_path)]
    counts = Counter(int(n) for _, n in records)
    assert sorted(counts) == list(range(total))
    assert set(counts.values()) == {1}, "a job ran twice while its lease was held"
    assert len({pid for pid, _ in records}) == 2, "both processes should have taken jobs"
    assert queue.jobs() == []


def test_sigkill_mid_job_then_restart_runs_the_job_again_and_loses_nothing(
    tmp_path: Path,
) -> None:
    env = write_app(tmp_path)
    env.update(APP_NODE="stable-node", APP_SLOW="30")
    queue = exqueue.Queue(env["APP_URL"])
    queue.worker(name="app.slow")(lambda n: None)
    job_id = queue.enqueue("app.slow", 7)
    cmd = [sys.executable, "-m", "exqueue", "worker", "--app", "procapp:queue"]

    first = subprocess.Popen(cmd, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while "start 7" not in lines(tmp_path):
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        job = queue.get(job_id)
        assert job is not None and job.state == "running"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()

    env["APP_SLOW"] = "0"
    second = subprocess.Popen(cmd, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while "done 7" not in lines(tmp_path):
            assert time.monotonic() < deadline, "the killed job was not run again"
            time.sleep(0.05)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0
    assert lines(tmp_path) == ["start 7", "start 7", "done 7"]
    assert queue.jobs() == []
