"""The overview's worker type settings (published by live nodes) and serial types' heads."""

from __future__ import annotations

import re
import time

from exqueue.dashboard import create_app
from exqueue.dashboard.types import describe, head, views
from exqueue.storage import (
    DEAD,
    RUNNING,
    WAITING,
    JobRecord,
    NewJob,
    NodeInfo,
    SupportsNodes,
    TypeSettings,
)
from tests.dashboard.conftest import client_for
from tests.dashboard.helpers import FAILING, FINE, IMG, SCRIPT, Filled
from tests.dashboard.test_app import assert_escaped

LIMITED = TypeSettings(
    3, global_limit=7, rate=100, per=60.0, partitioned=True, timeout=2.5, max_attempts=4
)
SERIAL = TypeSettings(1, serial=True, max_attempts=1, backoff="Fixed(seconds=30.0)")


def row(page: str, name: str) -> str:
    found = re.search(rf'<tr data-type="{re.escape(name)}">(.*?)</tr>', page, re.S)
    assert found, f"no row for {name!r}"
    return found.group(1)


def _put(filled: Filled, worker: str, job_id: str, now: float) -> None:
    filled.queue.storage.enqueue([NewJob(job_id, worker, b"[[], {}]", now - 10, now - 10, 3)])


def test_overview_shows_published_settings_and_serial_heads(filled: Filled) -> None:
    storage, now = filled.queue.storage, time.time()
    assert isinstance(storage, SupportsNodes)
    tag = filled.dead[0][:8]
    dead, retry, run, wait = (f"{tag}{kind}" for kind in ("dead", "retry", "run", "wait"))
    for kind, job_id in (("dead", dead), ("retry", retry), ("run", run), ("wait", wait)):
        _put(filled, f"serial.{kind}", job_id, now)
    _put(filled, "serial.dead", f"{tag}behind", now)  # waits behind the dead head
    for kind in ("dead", "retry", "run"):
        claimed = storage.claim(
            f"serial.{kind}", 1, now=now, owner="n", token="t", lease_until=now + 600, serial=True
        )
        assert [r.id for r in claimed] == [f"{tag}{kind}"]
    assert storage.bury(dead, "t", error="boom")
    assert storage.schedule_retry(retry, "t", run_at=now + 3600, error="later")
    serial = {f"serial.{kind}": SERIAL for kind in ("dead", "retry", "run", "wait", "idle")}
    hostile = TypeSettings(2, backoff=IMG)
    storage.beat_node(
        NodeInfo(
            "node-1",
            "h",
            1,
            now,
            now,
            {FINE: 3, "serial.dead": 1},
            0,
            {FINE: LIMITED, SCRIPT: hostile, **serial},
        )
    )
    storage.beat_node(NodeInfo("node-2", "h", 2, now, now, {FINE: 4}, 0, {FINE: TypeSettings(4)}))
    nodes = client_for(create_app(filled.queue)).get("/nodes").text
    assert 'serial.dead (1) <span class="badge serial">serial</span>' in nodes
    assert "report.build (3)</span>" in nodes  # a plain type has no marker

    page = client_for(create_app(filled.queue)).get("/").text
    assert_escaped(page)
    fine = row(page, FINE)
    assert "data-serial" not in fine and "data-disagree" in fine
    assert "3 per node · at most 7 running per partition · rate 100 per 60 s per partition" in fine
    assert "timeout 2.5 s · 4 attempts" in fine and "on node-2:</span> 4 per node" in fine
    # The helpers' node runs FINE too but publishes no settings (an older exqueue).
    assert "no settings published" in fine
    assert "/job/" not in fine, "a plain type's oldest job is not shown as a blocking head"
    failing = row(page, FAILING)
    assert "no live node — settings unknown" in failing and "data-serial" not in failing
    assert "/job/" not in failing
    expected = {
        "dead": (dead, '>dead</span> <span class="muted">blocks the type until it is retried'),
        "retry": (retry, '>scheduled for retry</span> <span class="muted">the type waits until'),
        "run": (run, '>running</span> <span class="muted">the type waits for it to finish'),
        "wait": (wait, '>waiting</span> <span class="muted">runs next'),
    }
    for kind, (job_id, text) in expected.items():
        serial_row = row(page, f"serial.{kind}")
        assert "data-serial" in serial_row and "serial (one at a time, in order)" in serial_row
        assert f'href="/job/{job_id}"' in serial_row and text in serial_row, serial_row
    idle = row(page, "serial.idle")  # published by a live node, no jobs yet
    assert "data-serial" in idle and "no jobs" in idle and 'data-key="waiting">0<' in idle
    hostile_row = row(page, "&lt;script&gt;window.__pwned = 1&lt;/script&gt;")
    assert "2 per node" in hostile_row and "backoff &#34;&gt;&lt;img" in hostile_row


def test_views_merge_nodes_and_keep_disagreement() -> None:
    a = NodeInfo("a", "h", 1, 0.0, 0.0, {"w": 1, "old": 1}, 0, {"w": SERIAL})
    b = NodeInfo("b", "h", 2, 0.0, 0.0, {"w": 2}, 0, {"w": TypeSettings(2)})
    c = NodeInfo("c", "h", 3, 0.0, 0.0, {"w": 1}, 0, {"w": SERIAL})
    found = views([a, b, c], ["jobs.only"])
    assert list(found) == ["jobs.only", "old", "w"]
    assert not found["jobs.only"].known and not found["jobs.only"].serial
    assert not found["old"].known and found["old"].silent == ("a",)
    w = found["w"]
    assert w.serial and w.disagree
    assert [(p.settings, p.nodes) for p in w.published] == [
        (SERIAL, ("a", "c")),
        (TypeSettings(2), ("b",)),
    ]
    assert views(None, ["x"])["x"].published == ()
    assert describe(TypeSettings(5, is_async=True)) == ["5 per node", "1 attempt", "async"]


def test_head_says_what_blocks_a_serial_type() -> None:
    def record(state: str, attempt: int, run_at: float) -> JobRecord:
        return JobRecord("j", 1, "w", b"", state, attempt, 3, run_at, 0.0)  # type: ignore[arg-type]

    assert head(record(WAITING, 0, 10.0), now=10.0).kind == "waiting"
    assert head(record(WAITING, 0, 11.0), now=10.0).label == "scheduled"
    assert head(record(WAITING, 1, 11.0), now=10.0).label == "scheduled for retry"
    assert head(record(RUNNING, 1, 0.0), now=10.0).kind == "running"
    assert head(record(DEAD, 3, 0.0), now=10.0).kind == "dead"
