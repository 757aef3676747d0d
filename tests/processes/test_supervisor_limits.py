"""Issue 13 item 13 and worker recycling: the supervisor gives up on children that
fail right after starting, and ``--max-jobs`` / ``--max-memory`` recycle a worker
process gracefully (its jobs finish or are released; none is lost or run twice)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import exqueue
from tests.support.procapp import lines, wait_until, write_app

WORKER = [sys.executable, "-m", "exqueue", "worker", "--app", "procapp:queue"]


def test_supervisor_gives_up_with_the_import_error(tmp_path: Path) -> None:
    env = write_app(tmp_path)
    (tmp_path / "brokenapp.py").write_text("import no_such_module_exqueue_test\n")
    command = [sys.executable, "-m", "exqueue", "worker", "--app", "brokenapp:queue"]
    supervisor = subprocess.Popen(
        [*command, "--processes", "2"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    try:
        _, stderr = supervisor.communicate(timeout=90)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
    assert supervisor.returncode == 1
    last = stderr.strip().splitlines()[-1]
    assert "giving up" in last and "no_such_module_exqueue_test" in last, stderr[-2000:]


def test_max_jobs_recycles_children_without_losing_or_repeating_a_job(tmp_path: Path) -> None:
    env = write_app(tmp_path)
    queue = exqueue.Queue(env["APP_URL"])
    queue.worker(name="app.record")(lambda n: None)
    queue.enqueue_many([exqueue.Call("app.record", (n,)) for n in range(300)])
    supervisor = subprocess.Popen(
        [*WORKER, "--processes", "2", "--max-jobs", "40", "--stop-timeout", "10"],
        env=env,
        cwd=tmp_path,
    )
    try:
        wait_until(
            lambda: len(lines(tmp_path)) >= 300 and not queue.jobs(),
            "all 300 jobs ran and none is stored",
            timeout=120,
        )
    finally:
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0
    records = [line.split() for line in lines(tmp_path)]
    assert sorted(int(n) for _, n in records) == list(range(300)), "lost or repeated a job"
    pids = {pid for pid, _ in records}
    # 300 jobs at most 40 per process (a few more may finish while one stops).
    assert len(pids) >= 5, pids


def test_max_memory_stops_a_worker_gracefully_with_the_recycle_status(tmp_path: Path) -> None:
    env = write_app(tmp_path)
    env["APP_SLOW"] = "0.5"
    queue = exqueue.Queue(env["APP_URL"])
    queue.worker(name="app.slow")(lambda n: None)
    queue.enqueue_many([exqueue.Call("app.slow", (n,)) for n in range(20)])
    started = time.monotonic()
    # Any Python process uses more than 1 MB: it recycles at its first check.
    worker = subprocess.run(
        [*WORKER, "--max-memory", "1", "--stop-timeout", "10"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 75, worker.stderr
    assert "--max-memory 1" in worker.stderr
    assert time.monotonic() - started < 30
    # The job it was running finished; the rest wait, none is held or lost.
    done = [line for line in lines(tmp_path) if line.startswith("done")]
    started_jobs = [line for line in lines(tmp_path) if line.startswith("start")]
    assert len(done) == len(started_jobs)
    assert queue.jobs(state="running") == [] and queue.jobs(state="dead") == []
    assert len(queue.jobs(state="waiting")) == 20 - len(done)
