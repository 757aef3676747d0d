"""Upgrading a Redis namespace written by exqueue version 1, in place, under a lock.

The version-1 store is written by the version-1 code itself: commit ``c524ee1``
is unpacked into a temporary directory and run in a subprocess with that
directory first on ``PYTHONPATH``. It leaves waiting, scheduled, running, dead
(with several errors), retried and serial jobs; the new code opens the
namespace, and every job must read back as version 1 wrote it (with the
protocol-2 defaults), then go on working. Two processes opening the store at
once upgrade it once; a held upgrade lock makes an opener wait.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from exqueue.errors import ConfigurationError
from exqueue.storage import DEAD, RUNNING, WAITING, JobRecord, NewJob
from exqueue_redis import RedisStorage
from exqueue_redis._layout import open_layout
from tests.support import services
from tests.support.history import ROOT, source_tree

V1_COMMIT = "c524ee1"

# Run by the version-1 code: fill a namespace, print every job as v1 reads it.
WRITE_V1 = textwrap.dedent("""
    import dataclasses, json, sys
    import exqueue_redis
    from exqueue.storage import NewJob
    from exqueue_redis import RedisStorage
    url, ns = sys.argv[1], sys.argv[2]
    s = RedisStorage(url, namespace=ns)
    s.enqueue([
        NewJob("wait-1", "app.a", b"\\x00\\xffpayload", 10.0, 10.0, 3),
        NewJob("wait-2", "app.a", b"2", 0.1 + 0.2, 11.0, 3),
        NewJob("sched-1", "app.a", b"s", 1e12, 12.0, 3),
        NewJob("run-1", "app.b", b"r", 5.0, 5.0, 2),
        NewJob("dead-1", "app.b", b"d", 6.0, 6.0, 2),
        NewJob("retry-1", "app.b", b"t", 7.0, 7.0, 5),
        NewJob("serial-1", "app.s", b"1", 1.0, 1.0, 3),
        NewJob("serial-2", "app.s", b"2", 1.0, 1.0, 3),
    ])
    got = s.claim("app.b", 10, now=100.0, owner="n1", token="tok", lease_until=130.0)
    assert [j.id for j in got] == ["run-1", "dead-1", "retry-1"], got
    assert s.schedule_retry("dead-1", "tok", run_at=100.0, error="first failure")
    assert s.schedule_retry("retry-1", "tok", run_at=150.0, error="failed once")
    got = s.claim("app.b", 10, now=101.0, owner="n2", token="tok2", lease_until=131.0)
    assert [j.id for j in got] == ["dead-1"], got
    assert s.bury("dead-1", "tok2", error="second failure")
    jobs = {}
    for j in s.list_jobs(limit=100):
        d = dataclasses.asdict(j)
        d["payload"] = j.payload.hex()
        d["errors"] = list(j.errors)
        jobs[j.id] = d
    print(json.dumps({"module": exqueue_redis.__file__, "jobs": jobs}))
    s.close()
""")

# Run by the new code: wait for a common start, open (upgrading), report.
OPEN_NEW = textwrap.dedent("""
    import sys, time
    from exqueue_redis import RedisStorage
    url, ns, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    while time.time() < start:
        time.sleep(0.001)
    s = RedisStorage(url, namespace=ns)
    print(len(s.list_jobs(limit=100)))
    s.close()
""")


@pytest.fixture(scope="module")
def v1_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The version-1 code, unpacked from git history."""
    return source_tree(V1_COMMIT, tmp_path_factory.mktemp("exqueue-v1"))


@pytest.fixture
def namespace(url: str) -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:8]}"
    yield name
    cleanup = RedisStorage(url, namespace=name)
    cleanup.destroy()
    cleanup.close()


def write_v1(v1_tree: Path, url: str, namespace: str) -> dict[str, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-c", WRITE_V1, url, namespace],
        cwd=v1_tree,
        env={**os.environ, "PYTHONPATH": str(v1_tree)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert Path(found["module"]).is_relative_to(v1_tree)  # really the version-1 code
    jobs: dict[str, dict[str, Any]] = found["jobs"]
    return jobs


def as_v1(record: JobRecord) -> dict[str, Any]:
    """The fields version 1 had, as the writer printed them."""
    return {
        "id": record.id, "seq": record.seq, "worker": record.worker,
        "payload": record.payload.hex(), "state": record.state, "attempt": record.attempt,
        "max_attempts": record.max_attempts, "run_at": record.run_at,
        "enqueued_at": record.enqueued_at, "errors": list(record.errors),
        "lease_owner": record.lease_owner, "lease_token": record.lease_token,
        "lease_expires": record.lease_expires, "started_at": record.started_at,
        "error_count": record.error_count,
    }  # fmt: skip


def schema(url: str, namespace: str) -> tuple[bytes | None, list[bytes]]:
    client = (
        redis.RedisCluster.from_url(url.replace("?cluster=true", ""))
        if "cluster=true" in url
        else redis.Redis.from_url(url)
    )
    try:
        prefix = f"{{{namespace}}}:"
        return client.get(prefix + "schema"), client.lrange(prefix + "schema:log", 0, -1)
    finally:
        client.close()


def test_a_v1_store_is_upgraded_in_place_losing_nothing(
    v1_tree: Path, url: str, namespace: str
) -> None:
    before = write_v1(v1_tree, url, namespace)
    assert {j["state"] for j in before.values()} == {WAITING, RUNNING, DEAD}
    assert before["dead-1"]["errors"] == ["first failure", "second failure"]
    assert schema(url, namespace)[0] == b"1"

    storage = RedisStorage(url, namespace=namespace)
    try:
        version, log = schema(url, namespace)
        assert version == b"2" and len(log) == 1 and log[0].startswith(b"1->2 at ")
        after = {j.id: j for j in storage.list_jobs(limit=100)}
        assert set(after) == set(before)
        for job_id, old in before.items():
            record = storage.get(job_id)
            assert record is not None and record == after[job_id]
            assert as_v1(record) == {k: old[k] for k in as_v1(record)}, job_id
            assert (record.priority, dict(record.meta), record.timeout) == (0, {}, None)
            assert (record.expires_at, record.unique_key) == (None, None)

        # ...and it works: v1 jobs keep their order behind a new urgent one,
        # the held lease is still its holder's, the dead job can be requeued.
        counts = storage.counts(100.0)
        assert (counts["app.a"].waiting, counts["app.a"].scheduled) == (2, 1)
        assert (counts["app.b"].running, counts["app.b"].dead, counts["app.b"].scheduled) == (
            1, 1, 1,
        )  # fmt: skip
        storage.enqueue([NewJob("urgent", "app.a", b"u", 100.0, 100.0, 3, priority=-1)])
        claimed = storage.claim("app.a", 10, now=100.0, owner="n3", token="t3", lease_until=130)
        assert [j.id for j in claimed] == ["urgent", "wait-2", "wait-1"]
        assert [j.attempt for j in claimed] == [1, 1, 1]
        assert storage.complete("run-1", "tok", now=120.0)
        assert storage.claim("app.b", 10, now=149.0, owner="n3", token="t4", lease_until=180) == []
        claimed = storage.claim("app.b", 10, now=150.0, owner="n3", token="t4", lease_until=180)
        assert [(j.id, j.attempt, j.errors) for j in claimed] == [("retry-1", 2, ("failed once",))]
        assert storage.requeue("dead-1", "dead-1b", now=200.0) == "requeued"
        claimed = storage.claim("app.b", 10, now=200.0, owner="n3", token="t5", lease_until=230)
        assert [(j.id, j.seq) for j in claimed] == [("dead-1b", before["dead-1"]["seq"])]
        serial = storage.claim("app.s", 5, now=200.0, owner="n", token="t6", lease_until=230,
                               serial=True)  # fmt: skip
        assert [j.id for j in serial] == ["serial-1"]
        # A second open finds layout 2 and upgrades nothing.
        RedisStorage(url, namespace=namespace).close()
        assert len(schema(url, namespace)[1]) == 1
    finally:
        storage.close()


def test_processes_opening_a_v1_store_together_upgrade_it_once(
    v1_tree: Path, url: str, namespace: str
) -> None:
    before = write_v1(v1_tree, url, namespace)
    start = time.time() + 1.5  # every process is up and waiting by then
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_NEW, url, namespace, repr(start)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for opener in openers:
        out, err = opener.communicate(timeout=60)
        assert opener.returncode == 0, err
        assert out.strip() == str(len(before))
    version, log = schema(url, namespace)
    assert version == b"2" and len(log) == 1


def test_an_opener_waits_for_a_held_upgrade_lock(v1_tree: Path, namespace: str) -> None:
    url = services.require("redis")
    write_v1(v1_tree, url, namespace)
    client = redis.Redis.from_url(url)
    prefix = f"{{{namespace}}}:"
    try:
        client.set(prefix + "upgrade:lock", "someone-else", px=30_000)

        def run(*args: Any) -> None:
            raise AssertionError("upgraded while another process held the lock")

        with pytest.raises(ConfigurationError, match="being upgraded .* by another process"):
            open_layout(client, prefix, namespace, run, wait=0.3)
        assert client.get(prefix + "schema") == b"1"
        # Once the other process has upgraded, the waiter goes on without upgrading.
        client.set(prefix + "schema", b"2")
        open_layout(client, prefix, namespace, run, wait=0.3)
        client.set(prefix + "schema", b"1")
        client.delete(prefix + "upgrade:lock")
        storage = RedisStorage(url, namespace=namespace)
        storage.close()
        assert client.get(prefix + "schema") == b"2"
        assert client.get(prefix + "upgrade:lock") is None  # released by its holder
    finally:
        client.close()
