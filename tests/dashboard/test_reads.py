"""The dashboard's counts cache and chart buckets, without HTTP."""

from __future__ import annotations

import time

import exqueue
from exqueue.dashboard.chart import buckets, svg
from exqueue.dashboard.reads import Filter, Reader
from exqueue.storage import Counts, HistoryCount
from exqueue_memory import MemoryStorage


def test_counts_are_kept_then_refreshed_behind_and_after_actions() -> None:
    queue = exqueue.Queue(MemoryStorage())

    @queue.worker(name="w")
    def job(n: int) -> None: ...

    clock = [0.0]
    reader = Reader(queue, counts_ttl=10, monotonic=lambda: clock[0])

    def waiting(**options: float) -> int:
        return reader.stats(**options)["w"].waiting

    assert waiting() == 0
    job.enqueue(1)
    assert waiting() == 0  # kept: younger than counts_ttl
    assert waiting(max_age=20) == 0
    clock[0] = 11.0
    assert waiting() == 0  # stale: the kept value, while a refresh runs behind
    deadline = time.monotonic() + 5
    while waiting() == 0:
        assert time.monotonic() < deadline, "the background refresh did not land"
        time.sleep(0.01)
    assert waiting() == 1
    job.enqueue(2)
    reader.invalidate()
    assert waiting() == 2  # after an action: fresh at once
    job.enqueue(3)
    clock[0] = 12.0
    assert waiting(max_age=0.5) == 3


def test_filter_parsing() -> None:
    chosen = Filter.parse({"state": "dead", "worker": "w", "tag": "k=v=w"})
    assert (chosen.state, chosen.worker, chosen.tag, chosen.problems) == (
        "dead",
        "w",
        ("k", "v=w"),
        (),
    )
    assert chosen.query(after=5) == {"state": "dead", "worker": "w", "tag": "k=v=w", "after": "5"}
    bad = Filter.parse({"state": "done", "tag": "=x"})
    assert bad.state is None and bad.tag is None and len(bad.problems) == 2


def test_chart_buckets_and_escaped_svg() -> None:
    now = 10 * 3600 + 30.0
    minute = int(now // 60) * 60
    rows = [
        HistoryCount("a", minute, 3, 1, 0),
        HistoryCount("b", minute, 2, 0, 1),
        HistoryCount("a", minute - 60 * 59, 5),
        HistoryCount("a", minute - 60 * 60, 100),  # outside the hour
    ]
    hour = buckets(rows, now, "hour")
    assert len(hour) == 60
    assert (hour[-1].succeeded, hour[-1].failed, hour[-1].dead) == (5, 1, 1)
    assert hour[0].succeeded == 5
    day = buckets(rows, now, "day")
    assert len(day) == 24 and sum(b.total for b in day) == 112
    drawn = str(svg(hour, "<b>title</b>"))
    assert "<b>" not in drawn and "&lt;b&gt;" in drawn
    assert drawn.count('class="succeeded"') == 2


class CountingStorage(MemoryStorage):
    """Counts the counts() scans the dashboard makes."""

    def __init__(self) -> None:
        super().__init__()
        self.scans = 0

    def counts(self, now: float) -> dict[str, Counts]:
        self.scans += 1
        return super().counts(now)


def test_no_page_waits_on_the_counts_scan_at_start_or_after_an_action() -> None:
    import re

    from exqueue.dashboard import create_app
    from tests.dashboard.conftest import client_for
    from tests.dashboard.helpers import form_token

    storage = CountingStorage()
    queue = exqueue.Queue(storage)

    @queue.worker(name="w")
    def job(n: int) -> None: ...

    first, second = job.enqueue(1), job.enqueue(2)
    with client_for(create_app(queue, counts_ttl=3600)) as client:
        assert storage.scans == 1  # read while starting, before any request
        page = client.get("/")
        assert page.status_code == 200 and storage.scans == 1
        assert re.search(r'data-count="w" data-key="waiting">2<', page.text)
        done = client.post(
            "/actions/delete", data={"csrf": form_token(page.text), "job_id": str(first)}
        )
        assert done.status_code == 200  # followed the redirect
        assert storage.scans == 2  # the action read fresh counts itself
        after = client.get("/")
        assert storage.scans == 2
        assert re.search(r'data-count="w" data-key="waiting">1<', after.text)
    assert queue.get(second) is not None
