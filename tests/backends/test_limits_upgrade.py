"""A store written before limits and pause (the code of commit 8614a79, run in a
subprocess) opens with this code, in place, losing nothing, and then takes
partitioned jobs, limited claims and pauses.

SQL: the ``partition_key`` column and the ``worker_control`` and ``starts``
tables are added under the schema lock at open. Redis: the layout needs no
change (an absent ``partition`` field reads as None, no ``paused`` set: none
paused), so the namespace is used as it is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from exqueue.storage import DEAD, RUNNING, WAITING, LimitedClaim, Limits, NewJob
from tests.support import services
from tests.support.history import source_tree

BEFORE = "8614a79"
NOW = 1_700_000_000.0

WRITE = """
import json, sys
from exqueue.storage import NewJob
kind, url, name, now = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
if kind == "redis":
    from exqueue_redis import RedisStorage
    s = RedisStorage(url, namespace=name)
else:
    from exqueue_sql import SQLStorage
    s = SQLStorage(url, prefix=name)
assert not hasattr(s, "claim_limited"), "not the code from before limits"
s.enqueue([NewJob(i, "w", i.encode(), now - 10, now - 10, 1) for i in ("a", "b", "c", "d")])
assert [r.id for r in s.claim("w", 2, now=now, owner="old", token="t", lease_until=now + 30)] \
    == ["a", "b"]
assert s.bury("b", "t", error="old failure")
print(json.dumps({r.id: [r.state, r.attempt, list(r.errors)] for r in s.list_jobs()}))
s.close()
"""


@pytest.fixture(scope="module")
def before_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source tree from before limits (``git archive``)."""
    return source_tree(BEFORE, tmp_path_factory.mktemp("exqueue_before_limits"))


def _open(kind: str, url: str, name: str) -> Any:
    if kind == "redis":
        from exqueue_redis import RedisStorage

        return RedisStorage(url, namespace=name)
    from exqueue_sql import SQLStorage

    return SQLStorage(url, prefix=name)


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mysql", "redis"])
def test_a_store_from_before_limits_opens_in_place_and_takes_limits(
    kind: str, before_code: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}" if kind == "sqlite" else services.require(kind)
    name = f"ul{uuid.uuid4().hex[:8]}" + ("" if kind == "redis" else "_")
    env = dict(os.environ, PYTHONPATH=str(before_code))
    done = subprocess.run(
        [sys.executable, "-c", WRITE, kind, url, name, str(NOW)],
        env=env, cwd=str(before_code), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    written = json.loads(done.stdout)
    storage = _open(kind, url, name)
    try:
        # Nothing lost, and every old job reads with no partition.
        jobs = {r.id: r for r in storage.list_jobs()}
        assert {i: [r.state, r.attempt, list(r.errors)] for i, r in jobs.items()} == written
        assert written["a"][0] == RUNNING and written["b"][0] == DEAD
        assert {r.partition for r in jobs.values()} == {None}
        # The old running job holds a slot; the limited claim takes one waiting job more.
        limits = Limits(concurrency=2)
        got = storage.claim_limited(LimitedClaim("w", 5, NOW + 1, "new", "t2", NOW + 60, limits))
        assert [r.id for r in got] == ["c"]
        # New jobs take a partition; pause holds for plain claims.
        storage.enqueue([NewJob("e", "w", b"e", NOW, NOW, 1, partition="p1")])
        assert storage.get("e").partition == "p1"
        storage.pause("w", True)
        assert storage.paused() == frozenset({"w"})
        assert storage.claim("w", 5, now=NOW + 2, owner="n", token="t3", lease_until=NOW + 60) == []
        storage.pause("w", False)
        found = storage.claim("w", 5, now=NOW + 2, owner="n", token="t3", lease_until=NOW + 60)
        assert [r.id for r in found] == ["d", "e"]
        assert storage.get("d").state == RUNNING and WAITING not in {
            r.state for r in storage.list_jobs()
        }
    finally:
        if hasattr(storage, "destroy"):
            storage.destroy()
        storage.close()
