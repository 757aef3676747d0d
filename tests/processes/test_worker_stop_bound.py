"""Issue 13 item 12: a worker whose storage is gone stops within its stop timeout
plus one grace period (about a connect timeout), however many jobs it holds."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import exqueue
from exqueue.cli import STOP_GRACE
from exqueue_redis import RedisStorage
from tests.support.procapp import lines, wait_until, write_app
from tests.support.redis_servers import RedisServer

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def test_stop_with_the_storage_gone_is_bounded(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    try:
        env = write_app(tmp_path)
        env.update(APP_URL=server.url, APP_SLOW="600")
        storage = RedisStorage(server.url)
        queue = exqueue.Queue(storage)
        queue.enqueue_many(
            [exqueue.Call("app.slow", (n,)) for n in range(3)]
            + [exqueue.Call("app.record", (n,)) for n in range(8)],
            allow_unknown=True,
        )
        storage.close()
        # app.slow runs one job at a time: one held and running, the rest waiting.
        worker = subprocess.Popen(
            [sys.executable, "-m", "exqueue", "worker", "--app", "procapp:queue"]
            + ["--stop-timeout", "1"],
            env=env,
            cwd=tmp_path,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(
            lambda: any(line.startswith("start") for line in lines(tmp_path)), "a job started"
        )
        server.kill()
        stopped = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        try:
            _, stderr = worker.communicate(timeout=1 + STOP_GRACE + 60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.communicate()
            pytest.fail("the worker did not stop with its storage gone")
        took = time.monotonic() - stopped
    finally:
        server.kill()
    # Within the stop timeout plus the grace, with room for a loaded machine.
    assert took < 1 + STOP_GRACE + 5, (took, stderr[-2000:])
    assert worker.returncode in (0, 1)
