"""Real worker nodes with a global limit per partition: kill -9 holding slots, then recovery.

``exqueue worker`` runs an app whose worker type allows at most 2 running jobs
per customer across every node (``global_limit=2, partition="customer"``) with
a 2-second lease. The first node takes the slots of both customers, its jobs
hang, and it is killed with -9 while holding them. A second node then finds the
slots taken until the killed node's leases expire and are recovered; it runs
every job, the killed node's included, never more than 2 of a customer at once
(each job records its start and end, appended to one file in order). On SQLite,
PostgreSQL, MariaDB and Redis.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import services
from tests.support.procapp import stop_all, wait_until

LEASE = 2.0

APP = textwrap.dedent(
    """
    import os, time
    import exqueue

    OUT, NODE = os.environ["APP_OUT"], os.environ.get("APP_NODE", "test")

    def storage():
        kind, url, tag = os.environ["APP_BACKEND"], os.environ["APP_URL"], os.environ["APP_TAG"]
        if kind == "redis":
            from exqueue_redis import RedisStorage
            return RedisStorage(url, namespace=tag)
        from exqueue_sql import SQLStorage
        return SQLStorage(url, prefix=tag + "_") if kind != "sqlite" else SQLStorage(url)

    queue = exqueue.Queue(storage(), lease=float(os.environ["APP_LEASE"]), poll_interval=0.05)

    def record(line):
        fd = os.open(OUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, (line + "\\n").encode())
        finally:
            os.close(fd)

    @queue.worker(name="lim.call", concurrency=8, global_limit=2, partition="customer")
    def call(customer, n):
        record(f"start {NODE} {customer} {n}")
        time.sleep(3600 if os.environ.get("APP_HANG") else 0.2)
        record(f"end {NODE} {customer} {n}")
    """
)


class Nodes:
    def __init__(self, tmp_path: Path, backend: str) -> None:
        self.tmp_path = tmp_path
        self.out = tmp_path / "out.txt"
        (tmp_path / "limapp.py").write_text(APP)
        url = f"sqlite:///{tmp_path / 'jobs.db'}" if backend == "sqlite" else ""
        if backend != "sqlite":
            url = services.require(backend)
        self.env = dict(os.environ)
        self.env.update(
            APP_OUT=str(self.out),
            APP_BACKEND=backend,
            APP_URL=url,
            APP_TAG=f"l{uuid.uuid4().hex[:8]}",
            APP_LEASE=str(LEASE),
            PYTHONPATH=os.pathsep.join([str(tmp_path), self.env.get("PYTHONPATH", "")]),
        )
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, node: str, **env: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "exqueue", "worker", "--app", "limapp:queue"]
        proc = subprocess.Popen(
            [*command, "--node", node],
            env={**self.env, "APP_NODE": node, **env},
            cwd=self.tmp_path,
        )
        self.procs.append(proc)
        return proc

    def lines(self) -> list[list[str]]:
        text = self.out.read_text() if self.out.exists() else ""
        return [line.split() for line in text.splitlines()]

    def run(self, code: str) -> None:
        subprocess.run([sys.executable, "-c", code], env=self.env, cwd=self.tmp_path, check=True)

    def stop(self) -> None:
        stop_all(self.procs)


@pytest.fixture(params=["sqlite", "postgres", "mysql", "redis"])
def nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Nodes]:
    made = Nodes(tmp_path, request.param)
    try:
        yield made
    finally:
        made.stop()
        made.run("import limapp; d = getattr(limapp.queue.storage, 'destroy', None); d and d()")


def _peaks(lines: list[list[str]]) -> Counter[str]:
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    for kind, _node, customer, _n in lines:
        running[customer] += 1 if kind == "start" else -1
        peak[customer] = max(peak[customer], running[customer])
    return peak


def test_a_node_killed_holding_slots_gives_them_back_and_another_node_runs_the_jobs(
    nodes: Nodes,
) -> None:
    nodes.run(
        "import limapp\n"
        "for n in range(3):\n"
        "    for c in ('a', 'b'):\n"
        "        limapp.call.enqueue(customer=c, n=n)\n"
    )
    first = nodes.start("n1", APP_HANG="1")
    wait_until(lambda: len(nodes.lines()) >= 4, "the first node took the slots")
    time.sleep(0.5)  # room for a fifth start, had the limit let one through
    held = nodes.lines()
    assert sorted((c, k) for k, _, c, _ in held) == [("a", "start")] * 2 + [("b", "start")] * 2
    first.send_signal(signal.SIGKILL)
    first.wait(30)

    nodes.start("n2")
    wait_until(
        lambda: sum(1 for line in nodes.lines() if line[0] == "end") == 6,
        "the second node ran every job, the killed node's included",
    )
    ran: list[list[str]] = nodes.lines()[4:]
    assert {(n, c) for k, node, c, n in ran if k == "end" and node == "n2"} == {
        (str(n), c) for n in range(3) for c in "ab"
    }
    assert len(ran) == 12  # each job once: a start and an end
    # Never more than 2 of a customer at once on the second node.
    assert max(_peaks(ran).values()) <= 2
