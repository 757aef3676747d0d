"""Limited claims on the shipped stores: values inlined into the SQL, and round trips.

PostgreSQL and MariaDB send a limited claim with its values inlined by the
driver's own quoting (``exqueue_sql._limits``, ``_limits_mysql``): names with
quotes, percent signs and SQL in them must come back as they went in. The SQL
stores must keep a limited claim within one round trip of an unlimited one
(counted from the statements SQLAlchemy sends, the commits, and psycopg's
BEGIN), and pause must be checked by an unlimited claim inside its own statement.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from exqueue.storage import LimitedClaim, Limits, NewJob
from tests.support.backends import backend_factory

ODD = "w%s %(x)s ' \" ; -- \\ é"


@pytest.fixture(params=["sqlite", "postgres", "mysql", "redis"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    opened: Any = backend_factory(request.param, tmp_path)()
    yield opened
    if hasattr(opened, "destroy"):
        opened.destroy()
    opened.close()


def _claim(
    storage: Any, worker: str, limits: Limits, now: float, owner: str = ODD, limit: int = 10
) -> list[Any]:
    request = LimitedClaim(worker, limit, now, owner, f"tok {owner} {now}", now + 60, limits)
    return list(storage.claim_limited(request))


def test_odd_names_and_partitions_go_through_the_inlined_sql_unchanged(storage: Any) -> None:
    parts = [ODD, "", None, "x'); DROP TABLE t; --"]
    storage.enqueue([NewJob(f"j{i}", ODD, b"p", 0.0, 0.0, 3, partition=p) for i, p in
                     enumerate(parts * 2)])  # fmt: skip
    limits = Limits(concurrency=1, rate=5, per=60.0, partitioned=True)
    first = _claim(storage, ODD, limits, 10.0)
    assert sorted(r.id for r in first) == ["j0", "j1", "j2", "j3"]  # one per partition
    assert {r.partition for r in first} == set(parts)
    assert {(r.worker, r.lease_owner) for r in first} == {(ODD, ODD)}
    assert storage.get("j0").partition == ODD
    assert _claim(storage, ODD, limits, 11.0) == []  # every partition full
    for r in first:
        assert storage.complete(r.id, r.lease_token)
    assert sorted(r.id for r in _claim(storage, ODD, limits, 12.0)) == ["j4", "j5", "j6", "j7"]
    storage.pause(ODD, True)
    assert storage.paused() == frozenset({ODD})


def _counter(storage: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Round trips of an SQLStorage, as benchmarks/limitcost.py counts them.

    The hot statements run on the driver's cursor (``exqueue_sql._prepared.driver_rows``),
    which SQLAlchemy's events do not see: those calls are counted where they are made.
    """
    count = [0]
    from exqueue_sql import _dialect, _prepared

    real_rows = _prepared.driver_rows

    def counted_rows(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return real_rows(*args, **kwargs)

    monkeypatch.setattr(_prepared, "driver_rows", counted_rows)
    monkeypatch.setattr(_dialect, "driver_rows", counted_rows)
    dialect = storage._dialect
    pools = [
        storage.engine,
        getattr(dialect, "_relaxed", None),
        getattr(dialect, "_autocommit", None),
    ]
    if storage.engine.dialect.name in ("mysql", "mariadb"):
        from exqueue_sql import _limits_mysql

        pools.append(_limits_mysql.engine_of(storage))
    postgres = storage.engine.dialect.name == "postgresql"

    def one(*_: Any, **__: Any) -> None:
        count[0] += 1

    def begun(conn: Any) -> None:
        if postgres and not conn.connection.driver_connection.autocommit:
            count[0] += 1

    for pool in {id(p): p for p in pools if p is not None}.values():
        target = getattr(pool, "engine", pool)
        event.listen(target, "before_cursor_execute", one)
        event.listen(target, "commit", one)
        event.listen(target, "begin", begun)
    return count


def test_a_limited_claim_costs_at_most_one_round_trip_more_than_an_unlimited_one(
    storage: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not hasattr(storage, "engine"):
        pytest.skip("Redis: every claim is one script (one EVALSHA), limited or not")
    storage.enqueue([NewJob(f"{w}{i}", w, b"p", 0.0, 0.0, 3, partition=f"p{i % 3}")
                     for w in ("plain", "lim", "rated") for i in range(20)])  # fmt: skip
    # The first limited claim of a type may make its lock row: not counted.
    _claim(storage, "lim", Limits(concurrency=100, partitioned=True), 1.0, "warm", 1)
    _claim(storage, "rated", Limits(rate=1000, per=60.0, partitioned=True), 1.0, "warm", 1)
    count = _counter(storage, monkeypatch)
    used = {}
    for kind, limits in (
        ("plain", None),
        ("lim", Limits(concurrency=100, partitioned=True)),
        ("rated", Limits(rate=1000, per=60.0, partitioned=True)),
    ):
        before = count[0]
        if limits is None:
            got = storage.claim(kind, 5, now=2.0, owner="o", token="t", lease_until=60.0)
        else:
            got = _claim(storage, kind, limits, 2.0, limit=5)
        assert len(got) == 5
        used[kind] = count[0] - before
    assert used["plain"] >= 1
    assert used["lim"] <= used["plain"] + 1, used
    assert used["rated"] <= used["plain"] + 1, used
