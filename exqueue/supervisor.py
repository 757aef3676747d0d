"""``exqueue worker --processes N``: run and supervise N worker processes.

Each child is ``exqueue worker --app APP --node BASE-i``. A child that dies is
started again under the same node name, so it reclaims its own jobs at once
instead of waiting for their leases to expire. SIGTERM or SIGINT is passed on
to every child, which stops gracefully; the supervisor waits for them all.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger("exqueue")

#: A child that dies sooner than this after its start is restarted after a pause.
MIN_UPTIME = 5.0


def _start(app: str, node: str, stop_timeout: float, extra: list[str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "exqueue", "worker", "--app", app, "--node", node]
    command += ["--stop-timeout", str(stop_timeout), *extra]
    return subprocess.Popen(command)


def supervise(app: str, processes: int, base: str, stop_timeout: float, extra: list[str]) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status for the supervisor."""
    stopping = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)

    nodes = [f"{base}-{number}" for number in range(processes)]
    children = {node: _start(app, node, stop_timeout, extra) for node in nodes}
    started = dict.fromkeys(nodes, time.monotonic())
    log.info("supervising %d worker processes: %s", processes, ", ".join(nodes))
    while not stopping.wait(0.2):
        for node, child in children.items():
            status = child.poll()
            if status is None:
                continue
            uptime = time.monotonic() - started[node]
            log.warning("worker %s exited with status %s; restarting it", node, status)
            if uptime < MIN_UPTIME and stopping.wait(MIN_UPTIME - uptime):
                break
            children[node] = _start(app, node, stop_timeout, extra)
            started[node] = time.monotonic()
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    status = 0
    for node, child in children.items():
        try:
            child.wait(timeout=stop_timeout + 10)
        except subprocess.TimeoutExpired:
            log.error("worker %s did not stop in time; killing it", node)
            child.kill()
            child.wait()
            status = 1
    return status
