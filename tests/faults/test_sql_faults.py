"""Connection loss: while the server is down calls raise; afterwards the same
storage object works again and nothing is lost (the LISTEN connection too).

These tests stop and start the shared local servers, briefly, and always start
them again. Run them alone: ``pytest -m faults tests/faults/test_sql_faults.py``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable

import pytest
from sqlalchemy.exc import OperationalError

from benchmarks.faults_harness import MariaDBOutage
from exqueue.storage import NewJob
from exqueue_sql import SQLStorage
from tests.support.backends import BackendHandle

pytestmark = pytest.mark.faults


def _wait_port(port: int, up: bool, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} did not go {'up' if up else 'down'} in {timeout}s")


def _pg(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action]
    if action == "stop":
        command += ["-m", "fast"]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    _wait_port(5432, up=action == "start")


def _mariadb(action: str) -> None:
    # The fault harness's control waits for the server process to be gone before a
    # start: a start issued while the old process is still exiting is a no-op.
    control = MariaDBOutage(None)  # type: ignore[arg-type]  # the target is not used
    if action == "stop":
        control.stop()
    else:
        control.start()
        time.sleep(0.5)  # the port opens a moment before logins are accepted


def _outage(storage: SQLStorage, control: Callable[[str], None]) -> None:
    """Stop the server, check calls fail cleanly, start it again (always)."""
    try:
        control("stop")
        with pytest.raises(OperationalError):
            storage.get("j0")
        with pytest.raises(OperationalError):
            storage.enqueue([NewJob("during", "w", b"", 0.0, 0.0, 1)])
        if "wakeup" in storage.capabilities:
            started = time.monotonic()
            storage.wait_for_jobs(0.3)  # does not raise, does not spin
            assert time.monotonic() - started >= 0.25
    finally:
        control("start")


def _check_survives(backend: BackendHandle, control: Callable[[str], None]) -> None:
    storage = backend.open()
    assert isinstance(storage, SQLStorage)
    storage.enqueue([NewJob(f"j{i}", "w", b"data", 0.0, 0.0, 3) for i in range(10)])
    held = storage.claim("w", 2, now=1.0, owner="o", token="tok", lease_until=100.0)
    if "wakeup" in storage.capabilities:
        storage.wait_for_jobs(1)  # listening before the outage
    before = storage.list_jobs()

    _outage(storage, control)

    deadline = time.monotonic() + 30
    while True:  # the server may refuse logins for a moment after its port opens
        try:
            after = storage.list_jobs()
            break
        except OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert after == before, "nothing was lost"
    assert storage.get("during") is None, "the failed enqueue did not half-happen"
    assert all(storage.complete(record.id, "tok") for record in held), "leases survived"
    assert len(storage.claim("w", 10, now=1.0, owner="o", token="t2", lease_until=9.0)) == 8
    if "wakeup" in storage.capabilities:
        # The LISTEN connection comes back: first a "may have missed" wake-up,
        # then real notifications from another storage object.
        assert storage.wait_for_jobs(5) is True
        other = backend.open()
        other.enqueue([NewJob("after", "w", b"", 0.0, 0.0, 1)])
        assert storage.wait_for_jobs(5) is True


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_postgres_restart(backend: BackendHandle) -> None:
    _check_survives(backend, _pg)


@pytest.mark.parametrize("backend", ["mysql"], indirect=True)
def test_mariadb_restart(backend: BackendHandle) -> None:
    _check_survives(backend, _mariadb)
