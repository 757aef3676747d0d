"""Schedules across real worker processes: exactly one job per tick, and kill -9 loses nothing.

An application module (written into a temporary folder) runs a one-second
schedule on a clock shared through a file, so the test moves simulated time one
second at a time without sleeping through it. Four ``exqueue worker``
processes fire and run the schedule on SQLite, PostgreSQL, MariaDB and Redis;
each job records the tick it was fired for (its ``enqueued_at``), and every
tick of the three simulated minutes must be recorded exactly once.

``SCHEDULE_COUNTS`` (a module global) keeps ticks expected vs jobs found per
backend; run with ``-s`` to see them printed.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from exqueue.storage import NewJob
from tests.support import services
from tests.support.procapp import stop_all, wait_until

START = 1_800_000_000.0
SECONDS = 180
PROCESSES = 4

APP = textwrap.dedent(
    """
    import os, signal
    import exqueue
    from exqueue.job import current_job

    CLOCK, OUT = os.environ["APP_CLOCK"], os.environ["APP_OUT"]

    def clock():
        with open(CLOCK) as f:
            return float(f.read())

    def storage():
        kind, url, tag = os.environ["APP_BACKEND"], os.environ["APP_URL"], os.environ["APP_TAG"]
        if kind == "redis":
            from exqueue_redis import RedisStorage
            return RedisStorage(url, namespace=tag)
        from exqueue_sql import SQLStorage
        return SQLStorage(url, prefix=tag + "_") if kind != "sqlite" else SQLStorage(url)

    queue = exqueue.Queue(storage(), clock=clock, lease=3600, poll_interval=0.05)

    @queue.periodic(every=1, name="beat")
    def beat():
        job = queue.get(current_job().id)
        fd = os.open(OUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{job.enqueued_at.timestamp()!r} {os.getpid()}\\n".encode())
        finally:
            os.close(fd)

    if os.environ.get("APP_KILL_AFTER_FIRE"):
        # Die the moment a tick is recorded with its job, before any worker runs it.
        fire = queue.storage.fire
        def fire_then_die(schedule, tick, job):
            if fire(schedule, tick, job):
                os.kill(os.getpid(), signal.SIGKILL)
            return False
        queue.storage.fire = fire_then_die
    """
)

SCHEDULE_COUNTS: dict[str, tuple[int, int]] = {}


class Cluster:
    """Worker processes of the app over one store, on a clock file the test moves."""

    def __init__(self, tmp_path: Path, backend: str) -> None:
        self.tmp_path = tmp_path
        self.clock = tmp_path / "clock"
        self.out = tmp_path / "out.txt"
        self.set_time(START)
        (tmp_path / "schedapp.py").write_text(APP)
        url = f"sqlite:///{tmp_path / 'jobs.db'}" if backend == "sqlite" else ""
        if backend != "sqlite":
            url = services.require({"postgresql": "postgres"}.get(backend, backend))
        self.env = dict(os.environ)
        self.env.update(
            APP_CLOCK=str(self.clock),
            APP_OUT=str(self.out),
            APP_BACKEND=backend,
            APP_URL=url,
            APP_TAG=f"s{uuid.uuid4().hex[:8]}",
            PYTHONPATH=os.pathsep.join([str(tmp_path), self.env.get("PYTHONPATH", "")]),
        )
        self.procs: list[subprocess.Popen[bytes]] = []

    def set_time(self, now: float) -> None:
        temporary = self.clock.with_suffix(".tmp")
        temporary.write_text(repr(now))
        os.replace(temporary, self.clock)  # readers see the old time or the new, never half

    def start(self, node: str, **env: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "exqueue", "worker", "--app", "schedapp:queue"]
        proc = subprocess.Popen(
            [*command, "--node", node], env={**self.env, **env}, cwd=self.tmp_path
        )
        self.procs.append(proc)
        return proc

    def ticks(self) -> list[float]:
        text = self.out.read_text() if self.out.exists() else ""
        return [float(line.split()[0]) for line in text.splitlines()]

    def stop(self) -> None:
        stop_all(self.procs)

    def in_app(self, act: Callable[[Any], None]) -> None:
        """Run ``act(queue)`` on the app's queue, imported in this process."""
        sys.path.insert(0, str(self.tmp_path))
        saved = dict(os.environ)
        os.environ.update(self.env)
        try:
            import schedapp  # type: ignore[import-not-found]

            schedapp = importlib.reload(schedapp)
            try:
                act(schedapp.queue)
            finally:
                schedapp.queue.storage.close()
        finally:
            os.environ.clear()
            os.environ.update(saved)
            sys.path.remove(str(self.tmp_path))
            sys.modules.pop("schedapp", None)

    def record_first_tick(self) -> None:
        """Record tick START as fired (its job for a worker nobody runs), as a running
        cluster would have: every node then fires from START + 1 on, however long
        it takes to start (a node's first look at a schedule with no stored tick
        is not due)."""

        def fire(queue: Any) -> None:
            job = NewJob("first-tick", "nobody", b"", START, START, 1)
            assert queue.storage.fire("beat", START, job)

        self.in_app(fire)

    def destroy(self) -> None:
        def drop(queue: Any) -> None:
            destroy = getattr(queue.storage, "destroy", None)
            if destroy is not None:
                destroy()

        self.in_app(drop)


@pytest.fixture(params=["sqlite", "postgresql", "mysql", "redis"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path, request.param)
    try:
        yield made
    finally:
        made.stop()
        made.destroy()


def test_four_processes_one_job_per_tick(cluster: Cluster) -> None:
    cluster.record_first_tick()
    for n in range(PROCESSES):
        cluster.start(f"node-{n}")
    for second in range(1, SECONDS + 1):
        cluster.set_time(START + second)
        wait_until(
            lambda second=second: len(cluster.ticks()) >= second,  # type: ignore[misc]
            f"the job of tick {second} ran",
            timeout=60,
        )
    time.sleep(0.5)  # a duplicate fire of the last tick would show by now
    cluster.stop()
    assert all(proc.returncode == 0 for proc in cluster.procs)
    found = Counter(cluster.ticks())
    expected = {START + s for s in range(1, SECONDS + 1)}
    backend = cluster.env["APP_BACKEND"]
    SCHEDULE_COUNTS[backend] = (len(expected), sum(found.values()))
    print(f"\n{backend}: ticks expected {len(expected)}, jobs found {sum(found.values())}")
    assert set(found) == expected
    assert all(n == 1 for n in found.values()), [t for t, n in found.items() if n > 1]


def test_kill_9_between_recording_and_running_a_tick_loses_nothing(cluster: Cluster) -> None:
    cluster.record_first_tick()
    victim = cluster.start("victim", APP_KILL_AFTER_FIRE="1")
    cluster.set_time(START + 1)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    assert cluster.ticks() == []  # recorded, not run
    # Restarted under its own name, as `exqueue worker --processes` restarts a child:
    # had one of the victim's threads claimed the job in the instant before the
    # kill, the new process takes it back at once instead of after the lease.
    survivor = cluster.start("victim")
    wait_until(lambda: len(cluster.ticks()) >= 1, "the recorded job ran on another node")
    cluster.set_time(START + 2)
    wait_until(lambda: len(cluster.ticks()) >= 2, "the next tick fired")
    time.sleep(0.5)
    assert survivor.poll() is None
    assert cluster.ticks() == [START + 1, START + 2]  # tick 1 once, never fired again
