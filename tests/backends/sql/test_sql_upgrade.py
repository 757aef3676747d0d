"""Schema upgrades: a store written by version 1 (the code of commit c524ee1,
run in a subprocess) is upgraded in place on first use, once, losing nothing;
a store of a newer schema version is refused with SchemaVersionError.

The version-1 store holds waiting, scheduled, running and dead jobs, with
errors; every field version 1 wrote is compared after the upgrade, and the
store then claims, completes, recovers, requeues and takes unique jobs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, update

import exqueue_sql
from exqueue.errors import SchemaVersionError
from exqueue.storage import DEAD, RUNNING, WAITING, NewJob, Unique
from exqueue_sql import SQLStorage
from tests.support import services
from tests.support.history import ROOT, source_tree

V1_COMMIT = "c524ee1"
NOW = 1_700_000_000.0
FIELDS = (
    "id seq worker payload state attempt max_attempts run_at enqueued_at errors error_count "
    "lease_owner lease_token lease_expires"
).split()

# Run by the version-1 code: fill a store, print every job as it reads it.
WRITE_V1 = """
import json, sys
import exqueue_sql
from exqueue.storage import NewJob
assert exqueue_sql.SCHEMA_VERSION == 1, exqueue_sql.__file__
url, prefix, now = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = exqueue_sql.SQLStorage(url, prefix=prefix)
def job(i, run_at=now, attempts=3):
    return NewJob(i, "w", ("payload " + i).encode(), run_at, now - 10, attempts)
s.enqueue([job("dead", attempts=2), job("retried"), job("running"), job("waiting"),
           job("scheduled", run_at=now + 3600)])
s.enqueue([NewJob("other", "o", b"\\x00\\xff", now, now, 1)])
# dead: two failures; retried: one failure, waiting again; running: leased.
assert [r.id for r in s.claim("w", 2, now=now, owner="n1", token="t1",
                              lease_until=now + 30)] == ["dead", "retried"]
assert s.schedule_retry("dead", "t1", run_at=now, error="first failure")
assert s.schedule_retry("retried", "t1", run_at=now + 5, error="only failure")
assert [r.id for r in s.claim("w", 1, now=now, owner="n1", token="t2",
                              lease_until=now + 30)] == ["dead"]
assert s.bury("dead", "t2", error="second failure\\nTraceback ...")
assert [r.id for r in s.claim("w", 1, now=now, owner="n2", token="t3",
                              lease_until=now + 60)] == ["running"]
out = {}
for r in s.list_jobs(limit=100):
    out[r.id] = {f: getattr(r, f) for f in json.loads(sys.argv[4])}
    out[r.id]["payload"] = r.payload.hex()
    out[r.id]["errors"] = list(r.errors)
s.close()
print(json.dumps(out))
"""

# Run by the current code, several at once: open (upgrading) and say what happened.
OPEN_NEW = """
import json, sys, time
import exqueue_sql
url, prefix, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))
s = exqueue_sql.SQLStorage(url, prefix=prefix)
print(json.dumps({"upgraded_from": s.upgraded_from, "jobs": len(s.list_jobs())}))
s.close()
"""


@pytest.fixture(scope="module")
def v1_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The version-1 source tree (``git archive`` of the last version-1 commit)."""
    return source_tree(V1_COMMIT, tmp_path_factory.mktemp("exqueue_v1"))


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def location(request: Any, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A URL and a fresh prefix; the tables are dropped afterwards."""
    name = request.param
    if name == "sqlite":
        url = f"sqlite:///{tmp_path / 'v1.db'}"
    else:
        url = services.require(name)
    prefix = f"u{uuid.uuid4().hex[:8]}_"
    yield url, prefix
    cleanup = SQLStorage(url, prefix=prefix, create=False) if name != "sqlite" else None
    if cleanup is not None:
        cleanup.destroy()
        cleanup.close()


def run(code: Path | None, script: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=str(code or ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def output(proc: subprocess.Popen[str]) -> Any:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out)


def write_v1(v1_code: Path, url: str, prefix: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = output(
        run(v1_code, WRITE_V1, url, prefix, str(NOW), json.dumps(FIELDS))
    )
    assert set(found) == {"dead", "retried", "running", "waiting", "scheduled", "other"}
    return found


def test_a_version_1_store_is_upgraded_and_keeps_every_job(
    v1_code: Path, location: tuple[str, str]
) -> None:
    url, prefix = location
    before = write_v1(v1_code, url, prefix)
    storage = SQLStorage(url, prefix=prefix, create=False)
    try:
        assert storage.upgraded_from == 1
        indexes = inspect(storage.engine).get_indexes(f"{prefix}jobs")
        claim_index = next(ix for ix in indexes if ix["name"] == f"{prefix}jobs_claim")
        assert claim_index["column_names"] == ["worker", "state", "priority", "run_at", "seq"]
        for job_id, was in before.items():
            record = storage.get(job_id)
            assert record is not None
            now = {f: getattr(record, f) for f in FIELDS}
            now["payload"], now["errors"] = record.payload.hex(), list(record.errors)
            assert now == was, job_id
            assert (record.priority, dict(record.meta), record.timeout) == (0, {}, None)
            assert (record.expires_at, record.unique_key) == (None, None)
        states = {r.id: r.state for r in storage.list_jobs()}
        assert states["dead"] == DEAD and states["running"] == RUNNING
        assert states["waiting"] == states["scheduled"] == states["retried"] == WAITING
        assert before["dead"]["errors"] == ["first failure", "second failure\nTraceback ..."]
        assert before["dead"]["error_count"] == 2
        # ... and it works: version-2 claims, uniqueness, recovery, requeue.
        storage.enqueue([NewJob("urgent", "w", b"", NOW, NOW, 1, priority=-1)])
        got = storage.claim("w", 10, now=NOW + 1, owner="n3", token="t4", lease_until=NOW + 9)
        assert [r.id for r in got] == ["urgent", "waiting"]
        assert storage.complete("waiting", "t4", now=NOW + 1)
        unique = Unique("k", period=60.0)
        assert storage.enqueue([NewJob("u1", "w", b"", NOW, NOW, 1, unique=unique)]) == ["u1"]
        assert storage.enqueue([NewJob("u2", "w", b"", NOW, NOW, 1, unique=unique)]) == ["u1"]
        recovered = storage.recover(NOW + 61, error="lost")
        assert "running" in recovered.waiting
        assert storage.requeue("dead", "dead2", now=NOW + 2) == "requeued"
        assert storage.complete("running", "t3") is False  # the old lease is fenced off
    finally:
        storage.close()
    again = SQLStorage(url, prefix=prefix, create=False)
    assert again.upgraded_from is None  # upgraded once
    again.close()


def test_two_processes_starting_at_once_upgrade_once(
    v1_code: Path, location: tuple[str, str]
) -> None:
    url, prefix = location
    before = write_v1(v1_code, url, prefix)
    start = time.time() + 3.0  # both processes have imported everything by then
    procs = [run(None, OPEN_NEW, url, prefix, str(start)) for _ in range(2)]
    results = [output(p) for p in procs]
    assert sorted(r["upgraded_from"] is None for r in results) == [False, True]
    assert [r["jobs"] for r in results] == [len(before)] * 2
    storage = SQLStorage(url, prefix=prefix, create=False)
    assert {r.id for r in storage.list_jobs()} == set(before)
    storage.close()


def test_a_newer_schema_is_refused_with_what_to_do(location: tuple[str, str]) -> None:
    url, prefix = location
    storage = SQLStorage(url, prefix=prefix)
    storage.enqueue([NewJob("a", "w", b"", NOW, NOW, 1)])
    meta = exqueue_sql.tables(prefix).meta
    with storage.engine.begin() as conn:
        conn.execute(update(meta).values(value=str(exqueue_sql.SCHEMA_VERSION + 1)))
    with pytest.raises(SchemaVersionError) as refused:
        SQLStorage(url, prefix=prefix)
    message = str(refused.value)
    assert f"schema version {exqueue_sql.SCHEMA_VERSION + 1}" in message
    assert "newer exqueue" in message and "pip install -U exqueue" in message
    with storage.engine.begin() as conn:
        conn.execute(update(meta).values(value=str(exqueue_sql.SCHEMA_VERSION)))
    assert storage.get("a") is not None  # nothing was touched
    storage.close()
