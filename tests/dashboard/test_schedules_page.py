"""The Schedules page from the storage URL alone: definitions the live nodes publish."""

from __future__ import annotations

import re
import time

from markupsafe import escape

from exqueue.dashboard import create_app
from exqueue.dashboard.reads import utc_text
from exqueue.storage import NodeInfo, ScheduleSettings, SupportsNodes, SupportsSchedules
from tests.dashboard.conftest import client_for
from tests.dashboard.helpers import IMG, SCRIPT, Filled
from tests.dashboard.test_app import assert_escaped

NIGHTLY = f"nightly {SCRIPT}"  # stored by fill(), published by no node there


def row(page: str, name: str) -> str:
    found = re.search(rf'<tr data-schedule="{re.escape(str(escape(name)))}">(.*?)</tr>', page, re.S)
    assert found, f"no row for {name!r}"
    return found.group(1)


def test_the_schedules_page_shows_what_live_nodes_publish(filled: Filled) -> None:
    storage, now = filled.queue.storage, time.time()
    assert isinstance(storage, SupportsNodes) and isinstance(storage, SupportsSchedules)
    client = client_for(create_app(filled.queue))
    before = row(client.get("/schedules").text, NIGHTLY)
    # fill()'s node runs a type but publishes no settings: an exqueue from before.
    assert "not registered on any live node" in before and "older exqueue" in before
    assert "unknown" in before

    storage.pause_schedule("gone", True)
    nightly = ScheduleSettings(IMG, "30 2 * * *", None, "Europe/Stockholm", "run_once")
    hourly, minutely = ScheduleSettings("w", "0 * * * *"), ScheduleSettings("w", "* * * * *")
    for name, published in (
        ("n-a", {NIGHTLY: nightly, "digest": hourly}),
        ("n-b", {NIGHTLY: nightly, "digest": minutely}),
    ):
        storage.beat_node(NodeInfo(name, "h", 1, now, now + 600, {}, 0, {}, published))
    infos = {info.name: info for info in filled.queue.schedules()}
    page = client.get("/schedules").text
    assert_escaped(page)

    mine = row(page, NIGHTLY)
    assert "30 2 * * *" in mine and "(Europe/Stockholm)" in mine and "run once" in mine
    assert str(escape(IMG)) in mine and "n-a, n-b" in mine
    assert utc_text(infos[NIGHTLY].next_fire) in mine and "not registered" not in mine

    digest = row(page, "digest")  # published, never ticked, and the nodes disagree
    assert "nodes disagree" in digest
    assert re.search(r"0 \* \* \* \*</span> \(UTC, w\) on n-a", digest)
    assert re.search(r"\* \* \* \* \*</span> \(UTC, w\) on n-b", digest)
    assert utc_text(infos["digest"].next_fire) in digest  # n-b's: the earlier tick

    gone = row(page, "gone")
    assert "not registered on any live node" in gone and "unknown" in gone

    nodes = client_for(create_app(filled.queue)).get("/nodes").text
    assert_escaped(nodes)
    assert f'title="30 2 * * * (Europe/Stockholm)">{escape(NIGHTLY)}</span>' in nodes
