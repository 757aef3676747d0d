"""SQLStorage setup: URLs, drivers, schema creation and versions, prefixes, capabilities."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text, update

import exqueue_sql
from exqueue.errors import ConfigurationError, SchemaVersionError
from exqueue.registry import connect
from exqueue.storage import (
    MULTI_PROCESS,
    PERSISTENT,
    TRANSACTIONAL_ENQUEUE,
    WAKEUP,
    NewJob,
    SupportsWakeup,
)
from exqueue_sql import SQLStorage
from exqueue_sql._urls import parse_url
from tests.support import services
from tests.support.backends import BackendHandle

SQL = ["sqlite", "postgres", "mysql"]


def job(job_id: str) -> NewJob:
    return NewJob(job_id, "w", b"", run_at=0.0, enqueued_at=0.0, max_attempts=1)


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("postgres://u@h:5433/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
        ("mysql://u@h/db", "mysql+pymysql"),
        ("mariadb://u@h/db", "mysql+pymysql"),
        ("sqlite:///jobs.db", "sqlite"),
        ("sqlite://", "sqlite"),
    ],
)
def test_urls_get_the_default_driver(url: str, driver: str) -> None:
    assert parse_url(url).drivername == driver


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("jobs.db", "no scheme"),
        ("oracle://u@h/db", "scheme 'oracle' is not supported"),
        ("postgresql://u@h:fivefour/db", "port"),
        ("postgresql://u@h", "names no database"),
        ("mysql://root@127.0.0.1:3306/", "names no database"),
        ("sqlite://somehost/jobs.db", "no host"),
        ("postgresql+nosuchdriver://u@h/db", "unknown database or driver"),
    ],
)
def test_bad_urls_say_which_part_is_wrong(url: str, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        SQLStorage(url)


@pytest.mark.parametrize(
    ("module", "url", "extra"),
    [
        ("psycopg", "postgresql://u@127.0.0.1/db", 'pip install "exqueue[postgres]"'),
        ("pymysql", "mysql://u@127.0.0.1/db", 'pip install "exqueue[mysql]"'),
    ],
)
def test_missing_driver_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, url: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ConfigurationError) as caught:
        SQLStorage(url)
    assert extra in str(caught.value)


def test_password_is_not_echoed() -> None:
    with pytest.raises(ConfigurationError) as caught:
        SQLStorage("postgresql://user:s3cret@h")
    assert "s3cret" not in str(caught.value)


def test_bad_prefix_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="prefix"):
        SQLStorage("sqlite://", prefix="jobs; drop table x")


def test_registry_connects_by_scheme(tmp_path: Path) -> None:
    storage = connect(f"sqlite:///{tmp_path / 'q.db'}")
    assert isinstance(storage, SQLStorage)
    storage.close()


def test_memory_sqlite_is_not_persistent() -> None:
    storage = SQLStorage("sqlite:///:memory:")
    assert PERSISTENT not in storage.capabilities
    assert MULTI_PROCESS not in storage.capabilities
    storage.enqueue([job("a")])
    assert storage.get("a") is not None
    storage.close()


def test_sqlite_file_uses_wal(tmp_path: Path) -> None:
    storage = SQLStorage(f"sqlite:///{tmp_path / 'q.db'}")
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0
    assert {PERSISTENT, MULTI_PROCESS, TRANSACTIONAL_ENQUEUE} <= storage.capabilities
    assert WAKEUP not in storage.capabilities
    storage.close()


def test_metadata_has_the_default_tables() -> None:
    assert set(exqueue_sql.metadata.tables) == {
        "exqueue_jobs",
        "exqueue_meta",
        "exqueue_unique",
        "exqueue_unique_done",
        "exqueue_schedules",
        "exqueue_nodes",
        "exqueue_history",
        "exqueue_job_control",
        "exqueue_worker_control",
        "exqueue_starts",
    }
    jobs = exqueue_sql.metadata.tables["exqueue_jobs"]
    assert {"seq", "id", "worker", "payload", "state", "run_at", "lease_token"} <= set(
        jobs.c.keys()
    )


@pytest.mark.parametrize("backend", SQL, indirect=True)
def test_tables_and_indexes_are_created(backend: BackendHandle) -> None:
    storage = backend.open()
    assert isinstance(storage, SQLStorage)
    found = inspect(storage.engine)
    name = f"{storage.prefix}jobs"
    assert found.has_table(name) and found.has_table(f"{storage.prefix}meta")
    indexes = {tuple(ix["column_names"]) for ix in found.get_indexes(name)}
    assert {
        ("worker", "state", "priority", "run_at", "seq"),
        ("worker", "seq"),
        ("state", "seq"),
        ("worker", "unique_key"),
        ("state", "expires_at"),
    } <= indexes
    assert (WAKEUP in storage.capabilities) == (backend.name == "postgres")
    assert isinstance(storage, SupportsWakeup)


@pytest.mark.parametrize("backend", SQL, indirect=True)
def test_schema_version_mismatch_is_refused(backend: BackendHandle) -> None:
    storage = backend.open()
    assert isinstance(storage, SQLStorage)
    meta = exqueue_sql.tables(storage.prefix).meta
    with storage.engine.begin() as conn:
        conn.execute(update(meta).values(value="999"))
    with pytest.raises(SchemaVersionError, match="schema version 999"):
        backend.open()
    with storage.engine.begin() as conn:
        conn.execute(update(meta).values(value=str(exqueue_sql.SCHEMA_VERSION)))


@pytest.mark.parametrize("backend", SQL, indirect=True)
def test_foreign_jobs_table_is_refused(backend: BackendHandle) -> None:
    storage = backend.open()
    assert isinstance(storage, SQLStorage)
    with storage.engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {storage.prefix}meta"))
    with pytest.raises(SchemaVersionError, match="without"):
        backend.open()
    storage.destroy()  # leave nothing the fixture's cleanup would refuse


def test_create_false_needs_the_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    with pytest.raises(ConfigurationError, match="do not exist"):
        SQLStorage(url, create=False)
    # Tables made from exqueue_sql.metadata (as Alembic would) are adopted.
    engine = create_engine(url)
    exqueue_sql.metadata.create_all(engine)
    engine.dispose()
    storage = SQLStorage(url, create=False)
    storage.enqueue([job("a")])
    assert storage.get("a") is not None
    storage.close()


def test_prefixes_keep_queues_apart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    one, two = SQLStorage(url, prefix="one_"), SQLStorage(url, prefix="two_")
    one.enqueue([job("a")])
    assert two.get("a") is None
    one.destroy()
    assert not inspect(two.engine).has_table("one_jobs")
    assert inspect(two.engine).has_table("two_jobs")
    one.close()
    two.close()


def test_many_processes_create_the_same_tables_at_once() -> None:
    """Concurrent first use on a server does not crash on CREATE TABLE races."""
    import concurrent.futures
    import uuid

    url = services.require("postgres")
    prefix = f"c{uuid.uuid4().hex[:8]}_"
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        stores = list(pool.map(lambda _: SQLStorage(url, prefix=prefix), range(6)))
    stores[0].destroy()
    for store in stores:
        store.close()
