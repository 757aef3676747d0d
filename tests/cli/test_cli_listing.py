"""Issue 13 items 5 (listing part) and 9: listing never fails because of one job,
and running jobs show how long they have run and on which node."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import exqueue
from exqueue.codec import JSONCodec
from exqueue.storage import NewJob
from exqueue_redis import RedisStorage
from tests.support import services
from tests.support.cli import cli

# Payloads the JSON codec fails on with error types it does not expect.
CRAFTED = {
    "bad-decimal": b'[[{"$": "decimal", "v": "not a number"}], {}]',
    "huge-timedelta": b'[[{"$": "timedelta", "v": [10000000000, 0, 0]}], {}]',
}


def store_crafted(storage: Any, now: float) -> None:
    jobs = [NewJob("good-1", "app.job", b"[[1], {}]", now, now, 3)]
    jobs += [NewJob(job_id, "app.job", payload, now, now, 3) for job_id, payload in CRAFTED.items()]
    jobs += [NewJob("good-2", "app.job", b"[[2], {}]", now, now, 3)]
    storage.enqueue(jobs)


def test_undecodable_payloads_never_break_listing_or_show(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    queue = exqueue.Queue(url)
    store_crafted(queue.storage, time.time())
    listed = queue.jobs()
    assert [job.id for job in listed] == ["good-1", *CRAFTED, "good-2"]
    assert [job.args for job in listed[::3]] == [(1,), (2,)]
    for job in listed[1:3]:
        assert job.args == () and job.payload_error
    queue.storage.close()

    table = cli("jobs", "--storage", url)
    assert table.returncode == 0, table.stderr
    assert all(job_id in table.stdout for job_id in ["good-1", *CRAFTED, "good-2"])
    as_json = json.loads(cli("jobs", "--json", "--storage", url).stdout)
    assert [bool(job["payload_error"]) for job in as_json] == [False, True, True, False]
    for job_id in CRAFTED:
        shown = cli("show", job_id, "--storage", url)
        assert shown.returncode == 0, shown.stderr
        assert "payload_error" in shown.stdout and "cannot decode" in shown.stdout


class Boom(Exception):
    """An error type no codec caller could expect."""


class FussyCodec(JSONCodec):
    def decode(self, data: bytes) -> Any:
        if b"boom" in data:
            raise Boom("crafted")
        return super().decode(data)


def test_a_codec_raising_any_error_type_never_breaks_listing() -> None:
    queue = exqueue.Queue("memory://", codec=FussyCodec())
    now = time.time()
    queue.storage.enqueue(
        [
            NewJob("a", "w", b'[["boom"], {}]', now, now, 3),
            NewJob("b", "w", b'[["fine"], {}]', now, now, 3),
        ]
    )
    jobs = queue.jobs()
    assert [(job.id, job.args) for job in jobs] == [("a", ()), ("b", ("fine",))]
    assert "Boom" in (jobs[0].payload_error or "")
    got = queue.get("a")
    assert got is not None and got.payload_error == jobs[0].payload_error


@pytest.fixture
def redis_store() -> Any:
    store = RedisStorage(services.require("redis"), namespace=f"t{uuid.uuid4().hex[:10]}")
    yield store
    store.destroy()
    store.close()


def test_running_jobs_show_how_long_and_where_on_redis(redis_store: RedisStorage) -> None:
    now = time.time()
    redis_store.enqueue([NewJob("hung", "app.job", b"[[], {}]", now - 4000, now - 4000, 3)])
    claimed = redis_store.claim(
        "app.job", 1, now=now - 3725, owner="node-7", token="t", lease_until=now + 600
    )
    assert [job.id for job in claimed] == ["hung"]
    options = ["--storage", services.require("redis"), "--namespace", redis_store.namespace]
    table = cli("jobs", "--state", "running", *options)
    assert table.returncode == 0, table.stderr
    assert "node-7" in table.stdout and "1h 2m" in table.stdout and "running for" in table.stdout
    [listed] = json.loads(cli("jobs", "--state", "running", "--json", *options).stdout)
    assert listed["node"] == "node-7"
    assert 3725 <= listed["running_for"] < 3800 and listed["running_for_at_most"] is None
    shown = cli("show", "hung", *options)
    assert shown.returncode == 0, shown.stderr
    assert "node-7" in shown.stdout and "1h 2m" in shown.stdout
    as_json = json.loads(cli("show", "hung", "--json", *options).stdout)
    assert as_json["node"] == "node-7" and 3725 <= as_json["running_for"] < 3800


def test_running_jobs_show_an_upper_bound_where_the_start_is_not_stored(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    queue = exqueue.Queue(url)
    now = time.time()
    queue.storage.enqueue([NewJob("hung", "app.job", b"[[], {}]", now - 7300, now - 7300, 3)])
    queue.storage.claim("app.job", 1, now=now, owner="node-3", token="t", lease_until=now + 600)
    queue.storage.close()
    table = cli("jobs", "--state", "running", "--storage", url)
    assert table.returncode == 0, table.stderr
    assert "node-3" in table.stdout and "at most 2h 1m" in table.stdout
    [listed] = json.loads(cli("jobs", "--json", "--storage", url).stdout)
    assert listed["node"] == "node-3" and listed["running_for"] is None
    assert 7300 <= listed["running_for_at_most"] < 7400
