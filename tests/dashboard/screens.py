"""Screenshots of every dashboard page for docs/dashboard.md.

    python -m tests.dashboard.screens [docs]

Builds a demo store (a few worker types, dead jobs with real tracebacks, an
hour of outcome history, live nodes publishing their settings and schedules),
serves the dashboard from the storage URL alone (as ``exqueue dashboard
--storage``) and saves a PNG per page with Debian's chromium through Playwright.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import exqueue
from exqueue.dashboard import create_app
from exqueue.runtime.observe import definition_of, settings_of
from exqueue.storage import HistoryCount, NodeInfo, TypeSettings
from tests.dashboard.helpers import served


def demo(url: str) -> exqueue.Queue:
    queue = exqueue.Queue(url)

    def published(*names: str) -> dict[str, TypeSettings]:
        """What a node running these worker types publishes with its heartbeat."""
        return {name: settings_of(queue.workers[name]) for name in names}

    @queue.worker(name="emails.send", max_retries=0, rate_limit="100/m", timeout=30)
    def send(to: str, template: str = "welcome") -> None:
        raise ConnectionError(f"SMTP server refused {to}: 421 too many connections")

    @queue.worker(name="billing.charge", max_retries=0, global_limit=2, partition="invoice")
    def charge(invoice: int, amount: float) -> None:
        raise ValueError(f"invoice {invoice}: card declined")

    @queue.worker(name="reports.build", concurrency=2)
    def build(report: str) -> None: ...

    @queue.worker(name="ledger.post", serial=True, max_retries=0)
    def post(entry: int) -> None:
        if entry == 1:
            raise RuntimeError("ledger entry 1: account 4411 is closed")

    for n in range(4):
        send.options(meta={"tenant": "acme"}).enqueue(f"user{n}@example.com")
    charge.options(meta={"tenant": "globex"}).enqueue(1041, 99.5)
    for entry in (1, 2, 3):
        post.enqueue(entry)  # the first dies; the others wait behind it
    queue.drain(timeout=30)
    queue.enqueue_many([build.call(f"daily-{n}") for n in range(37)])
    for n in range(5):
        build.enqueue_in(600 + n * 60, f"weekly-{n}")
    queue.schedule("nightly-report", "0 3 * * *", build.call("nightly"), tz="Europe/Stockholm")
    queue.schedule("hourly-digest", "0 * * * *", build.call("digest"))
    queue.schedule("retry-sweep", None, build.call("sweep"), every=300)
    # What web-1 fires; web-2, an older deploy, still runs the digest every 30 minutes.
    fired = {name: definition_of(schedule) for name, schedule in queue._schedules.items()}
    older = {"hourly-digest": replace(fired["hourly-digest"], cron="*/30 * * * *")}
    queue.pause_schedule("hourly-digest")
    storage = queue.storage
    now = time.time()
    minute = int(now // 60) * 60
    rows = []
    for back in range(60):
        wave = (back * 37) % 23
        rows.append(HistoryCount("reports.build", minute - 60 * back, 40 + wave, 0, 0, 3.0))
        rows.append(
            HistoryCount(
                "emails.send",
                minute - 60 * back,
                20 + wave // 2,
                back % 3,
                int(back % 11 == 0),
                1.0,
            )
        )
    storage.add_history(rows)  # type: ignore[attr-defined]
    storage.beat_node(
        NodeInfo(
            "web-1-4711-a1b2c3",
            "web-1",
            4711,
            now - 3600,
            now,
            {"emails.send": 5, "reports.build": 2},
            3,
            published("emails.send", "reports.build"),
            fired,
        )
    )  # type: ignore[attr-defined]
    # An older deploy still running reports.build at another concurrency: the
    # overview shows both settings.
    web2 = published("billing.charge", "ledger.post")
    web2["reports.build"] = replace(settings_of(build), concurrency=4)
    workers = {"billing.charge": 5, "ledger.post": 1, "reports.build": 4}
    storage.beat_node(
        NodeInfo("web-2-4802-d4e5f6", "web-2", 4802, now - 1800, now - 2, workers, 0, web2, older)
    )  # type: ignore[attr-defined]
    queue.pause("billing.charge")
    storage.pause_schedule("old-cleanup", False)  # type: ignore[attr-defined]
    return queue


def main(out: str = "docs") -> None:
    from playwright.sync_api import sync_playwright

    folder = Path(out)
    url = f"sqlite:///{tempfile.mkdtemp(prefix='exq-screens-')}/jobs.db"
    queue = demo(url)
    dead = queue.jobs(state="dead", worker="emails.send", limit=1)[0].id
    shots = {
        "dashboard-overview.png": "/",
        "dashboard-jobs.png": "/jobs?state=dead",
        "dashboard-job.png": f"/job/{dead}",
        "dashboard-confirm.png": "/jobs/bulk?op=delete&state=dead&worker=emails.send",
        "dashboard-schedules.png": "/schedules",
        "dashboard-nodes.png": "/nodes",
    }
    reader = exqueue.Queue(url)  # the storage URL alone: no worker type, no schedule
    with served(create_app(reader)) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 760})
        for name, path in shots.items():
            page.goto(server.url + path)
            page.screenshot(path=str(folder / name), full_page=name != "dashboard-job.png")
            print(folder / name)
        browser.close()
    reader.close()
    queue.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
