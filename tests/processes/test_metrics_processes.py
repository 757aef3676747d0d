"""``exqueue worker --metrics-port``: one endpoint, children summed under --processes;
a port in use is a clear error at start."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

import exqueue
from tests.support.procapp import lines, wait_until, write_app

CMD = [sys.executable, "-m", "exqueue", "worker", "--app", "procapp:queue"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def succeeded(port: int) -> float:
    return samples(port).get(("exqueue_jobs_succeeded_total", (("worker", "app.record"),)), 0)


def test_one_endpoint_sums_every_child(tmp_path: Path) -> None:
    env = write_app(tmp_path)
    port = free_port()
    queue = exqueue.Queue(env["APP_URL"])
    record = queue.worker(name="app.record")(lambda n: None)
    record.enqueue_in(3600, -1)  # stays scheduled: a gauge to see
    supervisor = subprocess.Popen(
        [*CMD, "--processes", "2", "--node", "prom", "--metrics-port", str(port)],
        env=env,
        cwd=tmp_path,
    )
    try:
        # Both children running before the jobs exist, and more jobs until each has
        # run some: on a slow machine one child started 0.23 s before the other and
        # ran all of a batch of 300 alone (the other polls the SQLite file).
        wait_until(lambda: len(queue.nodes()) == 2, "both children started")
        total = 0
        while len({line.split()[0] for line in lines(tmp_path)}) < 2:
            assert total < 3000, "both children ran jobs"
            start, total = total, total + 300
            queue.enqueue_many([exqueue.Call("app.record", (n,)) for n in range(start, total)])
            wait_until(lambda n=total: len(lines(tmp_path)) >= n, "every job ran")
        assert len({line.split()[0] for line in lines(tmp_path)}) == 2, "both children ran jobs"
        wait_until(lambda: succeeded(port) == total, "the endpoint counts every success")
        seen = samples(port)
        # The storage gauges come once, from the supervisor, not once per child.
        scheduled = ("exqueue_jobs", (("state", "scheduled"), ("worker", "app.record")))
        assert seen[scheduled] == 1
    finally:
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(60) == 0


def test_a_metrics_port_in_use_stops_the_worker_at_start(tmp_path: Path) -> None:
    env = write_app(tmp_path)
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for extra in ([], ["--processes", "2"]):
            result = subprocess.run(
                [*CMD, "--metrics-port", str(port), *extra],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode != 0
            assert f"cannot serve metrics on port {port}" in result.stderr, result.stderr
            assert "Traceback" not in result.stderr
