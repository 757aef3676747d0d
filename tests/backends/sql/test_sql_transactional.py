"""Transactional enqueue: jobs commit or roll back with the caller's transaction."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select
from sqlalchemy.orm import Session

import exqueue
from exqueue.errors import ConfigurationError
from exqueue.storage import TRANSACTIONAL_ENQUEUE, NewJob, SupportsTransactionalEnqueue
from exqueue_sql import SQLStorage
from tests.support.backends import BackendHandle

pytestmark = pytest.mark.parametrize("backend", ["sqlite", "postgres", "mysql"], indirect=True)


def job(job_id: str) -> NewJob:
    return NewJob(job_id, "w", b"x", run_at=0.0, enqueued_at=0.0, max_attempts=1)


def _sql(backend: BackendHandle) -> SQLStorage:
    storage = backend.open()
    assert isinstance(storage, SQLStorage)
    assert TRANSACTIONAL_ENQUEUE in storage.capabilities
    assert isinstance(storage, SupportsTransactionalEnqueue)
    return storage


def test_commit_keeps_jobs_and_app_rows(backend: BackendHandle) -> None:
    storage = _sql(backend)
    app = Table(f"{storage.prefix}orders", MetaData(), Column("id", Integer, primary_key=True))
    app.create(storage.engine)
    try:
        with storage.engine.begin() as conn:
            conn.execute(insert(app).values(id=1))
            storage.enqueue_in(conn, [job("a"), job("b")])
            storage.enqueue_in(conn.get_transaction(), [job("c")])
        assert [r.id for r in storage.list_jobs()] == ["a", "b", "c"]
        with storage.engine.connect() as conn:
            assert conn.scalar(select(app.c.id)) == 1
    finally:
        app.drop(storage.engine)


def test_rollback_drops_the_jobs(backend: BackendHandle) -> None:
    storage = _sql(backend)
    with pytest.raises(RuntimeError), storage.engine.begin() as conn:
        storage.enqueue_in(conn, [job("a")])
        raise RuntimeError("the request failed")
    assert storage.get("a") is None
    assert storage.list_jobs() == []


def test_orm_session(backend: BackendHandle) -> None:
    storage = _sql(backend)
    with Session(storage.engine) as session:
        storage.enqueue_in(session, [job("kept")])
        session.commit()
    with Session(storage.engine) as session:
        storage.enqueue_in(session, [job("dropped")])
        session.rollback()
    assert [r.id for r in storage.list_jobs()] == ["kept"]


def test_duplicate_id_leaves_the_transaction_usable(backend: BackendHandle) -> None:
    storage = _sql(backend)
    storage.enqueue([job("a")])
    with storage.engine.begin() as conn:
        with pytest.raises(ValueError):
            storage.enqueue_in(conn, [job("b"), job("a")])
        storage.enqueue_in(conn, [job("c")])
    assert [r.id for r in storage.list_jobs()] == ["a", "c"]


def test_wrong_kind_of_transaction(backend: BackendHandle) -> None:
    storage = _sql(backend)
    with pytest.raises(TypeError):
        storage.enqueue_in(object(), [job("a")])
    other = SQLStorage("sqlite://")
    with other.engine.begin() as conn:
        if backend.name != "sqlite":
            with pytest.raises(ConfigurationError):
                storage.enqueue_in(conn, [job("a")])
    other.close()


def test_queue_enqueue_many_in_a_session_commits_runs_and_rolls_back(
    backend: BackendHandle,
) -> None:
    storage = _sql(backend)
    queue = exqueue.Queue(storage)
    ran: list[int] = []
    ship = queue.worker(name="ship")(lambda order: ran.append(order))
    with Session(storage.engine) as session:
        [kept] = queue.enqueue_many([ship.call(1)], transaction=session)
        session.commit()
    with Session(storage.engine) as session:
        [dropped] = queue.enqueue_many([ship.call(2)], transaction=session)
        session.rollback()
    assert queue.get(kept) is not None and queue.get(dropped) is None
    assert queue.drain() == 1
    assert ran == [1]


def test_a_unique_duplicate_through_the_transaction_says_so(backend: BackendHandle) -> None:
    storage = _sql(backend)
    queue = exqueue.Queue(storage, check_clock=False)

    @queue.worker(name="app.sync", unique=True)
    def sync(account: int) -> None: ...

    first = sync.enqueue(7)
    with storage.engine.begin() as conn:
        again, other = queue.enqueue_many([sync.call(7), sync.call(8)], transaction=conn)
    assert again == first and again.duplicate
    assert not other.duplicate and storage.get(other) is not None
    assert len(storage.list_jobs()) == 2
