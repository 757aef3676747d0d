"""SQL stores at their limits: silent servers, missing or read-only stores, oversized jobs.

Each of these used to hang, answer "no jobs" over a store it had just created, or
fail with a driver message that named nothing the operator could act on.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect, text
from sqlalchemy.exc import OperationalError

import exqueue
from exqueue.errors import ConfigurationError
from exqueue.storage import NewJob
from exqueue_sql import SQLStorage, StorageTimeoutError
from tests.support import services
from tests.support.backends import BackendHandle
from tests.support.cli import cli

SERVERS = ["postgres", "mysql"]
SCHEMES = {"postgres": "postgresql", "mysql": "mysql"}


def job(job_id: str, payload: bytes = b"p") -> NewJob:
    return NewJob(job_id, "w", payload, 0.0, 0.0, 3)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


# -- item 10: connect and statement timeouts -------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("server", SERVERS)
def test_cli_gives_up_on_a_server_that_never_answers(server: str, silent_port: int) -> None:
    # Default timeouts. The helper allows the child 60 s: before, it hung 130 s
    # (PostgreSQL) or for ever (MariaDB).
    url = f"{SCHEMES[server]}://user@127.0.0.1:{silent_port}/db"
    result = cli("stats", "--storage", url)
    assert result.returncode != 0
    assert "did not answer in time" in result.stderr
    assert "connect_timeout=10.0 s" in result.stderr


@pytest.mark.parametrize("server", SERVERS)
def test_connect_timeout_is_configurable(server: str, silent_port: int) -> None:
    url = f"{SCHEMES[server]}://user@127.0.0.1:{silent_port}/db"
    outcome: list[BaseException] = []

    def open_it() -> None:
        try:
            SQLStorage(url, connect_timeout=1)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=open_it, daemon=True)
    thread.start()
    thread.join(60)  # a guard against the old hang only, not a speed check
    assert outcome, "opening a storage on a silent server did not give up"
    assert isinstance(outcome[0], StorageTimeoutError)
    assert isinstance(outcome[0], exqueue.errors.ExqueueError)
    assert "connect_timeout=1.0 s" in str(outcome[0])


@pytest.mark.parametrize("backend", SERVERS, indirect=True)
def test_statement_timeout_ends_a_statement_that_runs_too_long(backend: BackendHandle) -> None:
    url = services.require(backend.name)
    probe = backend.open()
    assert isinstance(probe, SQLStorage)
    storage = SQLStorage(url, prefix=probe.prefix, statement_timeout=0.5)
    sleep = "SELECT pg_sleep(5)" if backend.name == "postgres" else "SELECT SLEEP(5)"
    try:
        with pytest.raises(OperationalError), storage.engine.connect() as conn:
            conn.execute(text(sleep))
        storage.enqueue([job("after")])  # the storage goes on working
        assert storage.get("after") is not None
    finally:
        storage.close()


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), "10", True])
def test_bad_timeouts_are_refused(tmp_path: Path, value: object) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    with pytest.raises(ConfigurationError, match="connect_timeout"):
        SQLStorage(url, connect_timeout=value)  # type: ignore[arg-type]
    assert not (tmp_path / "q.db").exists()


# -- item 22: read-only commands never create ---------------------------------------------


def test_read_only_commands_do_not_create_a_missing_sqlite_store(tmp_path: Path) -> None:
    path = tmp_path / "mistyped.db"
    url = f"sqlite:///{path}"
    for args in (["jobs"], ["show", "some-id"], ["stats"], ["jobs", "--json"]):
        result = cli(*args, "--storage", url)
        assert result.returncode != 0, (args, result.stdout)
        assert "no SQLite file" in result.stderr and str(path) in result.stderr
        assert not path.exists(), args
    # A store that exists is read as before.
    exqueue.Queue(url).storage.close()
    assert cli("stats", "--storage", url).returncode == 0


@pytest.mark.parametrize("backend", SERVERS, indirect=True)
def test_read_only_commands_do_not_create_tables_on_a_server(backend: BackendHandle) -> None:
    url = services.require(backend.name)
    prefix = f"nosuch{uuid.uuid4().hex[:8]}_"
    result = cli("stats", "--storage", url, "--prefix", prefix)
    assert result.returncode != 0
    assert f"{prefix}jobs" in result.stderr and "do not exist" in result.stderr
    probe = backend.open()
    assert isinstance(probe, SQLStorage)
    assert not inspect(probe.engine).has_table(f"{prefix}jobs")


def test_connect_passes_create_only_to_backends_that_take_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no SQLite file"):
        exqueue.connect(f"sqlite:///{tmp_path / 'none.db'}", create=False)
    assert not (tmp_path / "none.db").exists()
    exqueue.connect("memory://", create=False).close()  # nothing to create, nothing refused


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="is not a directory"):
        SQLStorage(f"sqlite:///{tmp_path / 'nowhere' / 'q.db'}")


# -- item 23: read-only SQLite, oversized jobs on MariaDB -------------------------------------


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[Path]:
    """A SQLite store this process cannot write (immutable: even root cannot)."""
    path = tmp_path / "ro.db"
    SQLStorage(f"sqlite:///{path}").close()
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)]).returncode != 0:
        pytest.skip("cannot make a file read-only for this process here (chattr +i)")
    yield path
    subprocess.run([chattr, "-i", str(path)], check=True)


def test_a_read_only_sqlite_store_is_refused_at_open_with_the_reason(immutable: Path) -> None:
    with pytest.raises(ConfigurationError, match="read-only for this process"):
        SQLStorage(f"sqlite:///{immutable}")
    stats = cli("stats", "--storage", f"sqlite:///{immutable}")
    assert stats.returncode != 0 and "read-only" in stats.stderr


@pytest.mark.parametrize("backend", ["mysql"], indirect=True)
def test_mariadb_refuses_a_job_over_max_allowed_packet_and_stores_nothing(
    backend: BackendHandle,
) -> None:
    storage = backend.open()
    assert isinstance(storage, SQLStorage)
    with storage.engine.connect() as conn:
        packet = int(conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one())
    # A value may take half the packet: this one is under the packet, over the half.
    big = b"x" * (packet // 2 + 1000)
    with pytest.raises(ValueError, match="max_allowed_packet"):
        storage.enqueue([job("small"), job("big", big)])
    assert storage.list_jobs() == [], "nothing of the batch was stored"
    with pytest.raises(ValueError, match="max_allowed_packet"), storage.engine.begin() as conn:
        storage.enqueue_in(conn, [job("big", big)])
    # The connection was not dropped; a large job that fits goes in, even one whose
    # escaped form (quotes are sent as two bytes) fills nearly the whole packet.
    fits = b"'" * (packet // 2 - 8192)
    storage.enqueue([job("fits", fits)])
    stored = storage.get("fits")
    assert stored is not None and stored.payload == fits


# -- item 14: a full disk (SQLite) -----------------------------------------------------------


def test_a_full_disk_checkpoints_the_wal_says_so_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk, simulated with ``max_page_count`` (the same SQLITE_FULL error)."""
    path = tmp_path / "full.db"
    storage = SQLStorage(f"sqlite:///{path}")
    storage.enqueue([job(f"j{i}", b"x" * 2000) for i in range(300)])
    wal = Path(f"{path}-wal")
    assert wal.stat().st_size > 0
    with storage.engine.connect() as conn:
        pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())

    @event.listens_for(storage.engine, "connect")
    def _cap(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages + 5}")

    storage.engine.dispose()  # new connections get the cap
    with caplog.at_level(logging.WARNING, logger="exqueue"):
        with pytest.raises(OperationalError, match="full"):
            storage.enqueue([job(f"k{i}", b"y" * 2000) for i in range(300)])
    assert "the disk is full" in caplog.text and "checkpointed the WAL" in caplog.text
    assert wal.stat().st_size == 0, "the WAL's space was given back"
    assert len(storage.list_jobs(limit=1000)) == 300, "nothing stored was lost"
    assert storage.get("k0") is None, "the failed batch stored nothing"
    event.remove(storage.engine, "connect", _cap)
    storage.engine.dispose()
    storage.enqueue([job("later")])  # space is back: it goes on
    storage.close()
