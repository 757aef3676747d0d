"""Real OS processes over one SQLite file: exactly-once under a held lease, and SIGKILL.

Each test writes a tiny application module into a temporary folder and runs it
in subprocesses, as a user's deployment would.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import exqueue
from tests.support.procapp import lines, wait_until, write_app


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
        wait_until(lambda: "start 7" in lines(tmp_path), "the job started")
        job = queue.get(job_id)
        assert job is not None and job.state == "running"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()

    env["APP_SLOW"] = "0"
    second = subprocess.Popen(cmd, env=env, cwd=tmp_path)
    try:
        wait_until(lambda: "done 7" in lines(tmp_path), "the killed job ran again")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0
    assert lines(tmp_path) == ["start 7", "start 7", "done 7"]
    assert queue.jobs() == []
