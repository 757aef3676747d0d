"""The dashboard in a real browser: Debian's chromium driven by Playwright (no download).

Skips when ``/usr/bin/chromium`` or Playwright is missing, except under
``EXQUEUE_REQUIRE_SERVICES=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import exqueue
from exqueue.dashboard import create_app
from exqueue.storage import NodeInfo, SupportsNodes, TypeSettings
from tests.dashboard.helpers import FAILING, FINE, SCRIPT, Filled, fill, served
from tests.support.services import REQUIRED

CHROMIUM = os.environ.get("EXQUEUE_CHROMIUM", "/usr/bin/chromium")


def _need_browser() -> Any:
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "Playwright for Python is not installed (pip install -e '.[test]')"
    if reason is None and not os.path.exists(CHROMIUM):
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    if reason is not None:
        if REQUIRED:
            pytest.fail(reason + " (EXQUEUE_REQUIRE_SERVICES=1: a missing browser is a failure)")
        pytest.skip(reason)
    return sync_playwright


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_playwright = _need_browser()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-background-networking"],
        )
        yield launched
        launched.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Filled]]:
    queue = exqueue.Queue(f"sqlite:///{tmp_path / 'jobs.db'}")
    filled = fill(queue)
    app = create_app(queue, counts_ttl=0.1, poll_seconds=0.3)
    with served(app) as server:
        yield server.url, filled
    queue.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(10_000)
    problems: list[str] = []
    opened.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    opened.on("pageerror", lambda e: problems.append(str(e)))
    opened.problems = problems
    yield opened
    context.close()


def test_every_page_loads_and_escapes(site: tuple[str, Filled], page: Any) -> None:
    url, filled = site
    now = time.time()
    published = {"app.serial": TypeSettings(serial=True), FINE: TypeSettings(3, global_limit=5)}
    assert isinstance(filled.queue.storage, SupportsNodes)
    filled.queue.storage.beat_node(NodeInfo("browser-node", "h", 1, now, now, {}, 0, published))
    page.goto(url + "/")
    for name in ["Jobs", "Schedules", "Nodes", "Overview"]:
        page.get_by_role("link", name=name, exact=True).click()
        page.wait_for_load_state()
        assert page.locator("nav a[aria-current=page]").inner_text() == name
        assert page.evaluate("window.__pwned") is None
    assert page.locator("[data-total=dead]").inner_text() == "3"
    assert page.locator("svg.chart rect.succeeded").count() == 1
    assert page.locator('tr[data-type="app.serial"] [data-serial]').inner_text() == "serial"
    assert (
        "at most 5 running in the cluster" in page.locator(f'tr[data-type="{FINE}"]').inner_text()
    )
    page.goto(url + "/nodes")
    assert f"node {SCRIPT}" in page.locator("table").inner_text()
    page.goto(url + "/schedules")
    assert f"nightly {SCRIPT}" in page.locator("table").inner_text()
    assert "not registered on any live node" in page.locator("table").inner_text()
    page.goto(f"{url}/job/{filled.dead[0]}")
    assert SCRIPT in page.locator("pre.traceback").first.inner_text()
    assert page.locator("img").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert page.problems == []


def test_filter_open_retry_and_bulk_delete(site: tuple[str, Filled], page: Any) -> None:
    url, filled = site
    page.goto(url + "/jobs")
    assert page.locator("table.jobs tbody tr").count() == 6
    page.select_option("select[name=state]", "dead")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.jobs tbody tr")
    assert rows.count() == 3
    page.select_option("select[name=worker]", FINE)
    page.get_by_role("button", name="Filter").click()
    assert page.get_by_text("No jobs match.").is_visible()
    page.select_option("select[name=worker]", FAILING)
    page.get_by_role("button", name="Filter").click()
    assert rows.count() == 3

    first = rows.first.locator("a.mono").get_attribute("title")
    assert first is not None
    rows.first.locator("a.mono").click()
    assert first in page.locator("h1").inner_text()
    assert page.locator("pre.traceback").count() == 1
    page.go_back()

    rows.first.get_by_role("button", name="Retry").click()
    assert "retried dead job" in page.locator("p.note").inner_text()
    assert rows.count() == 2
    assert first not in page.locator("table.jobs").inner_text()
    assert filled.queue.stats()[FAILING].waiting == 1

    page.get_by_role("link", name="Delete all…").click()
    assert page.locator("#confirm-count").inner_text() == "2"
    assert "Delete 2 dead jobs?" in page.locator("h1").inner_text()
    page.get_by_role("button", name="Yes, delete 2 jobs").click()
    assert "deleted 2 dead jobs" in page.locator("p.note").inner_text()
    assert page.get_by_text("No jobs match.").is_visible()
    assert filled.queue.stats()[FAILING].dead == 0
    assert page.problems == []


def test_counts_change_live_without_reloading(site: tuple[str, Filled], page: Any) -> None:
    url, filled = site
    page.goto(url + "/")
    waiting = page.locator("[data-total=waiting]")
    assert waiting.inner_text() == "2"
    page.evaluate("window.__same_page = true")
    filled.queue.enqueue(FINE, 7)
    filled.queue.enqueue(FINE, 8)
    from playwright.sync_api import expect

    # Polls the element (no string evaluated in the page: the CSP forbids eval).
    expect(waiting).to_have_text("4", timeout=10_000)
    row = page.locator(f'[data-count="{FINE}"][data-key=waiting]')
    assert row.inner_text() == "4"
    assert page.evaluate("window.__same_page") is True  # not reloaded
    assert page.problems == []


def test_csrf_in_the_browser(site: tuple[str, Filled], page: Any) -> None:
    url, filled = site
    target = filled.dead[0]
    page.goto(url + "/jobs?state=dead")
    # The page's own origin, its cookie, but no token: refused.
    status = page.evaluate(
        """async ([url, id]) => {
            const body = new URLSearchParams({job_id: id});
            return (await fetch(url + "/actions/retry", {method: "POST", body})).status;
        }""",
        [url, target],
    )
    assert status == 403
    # A form of another origin posting to the dashboard: refused too.
    page.set_content(
        f'<form method="post" action="{url}/actions/delete">'
        f'<input name="job_id" value="{target}"><button>go</button></form>'
    )
    with page.expect_navigation():
        page.click("button")
    assert "refused" in page.content() or "CSRF" in page.content()
    got = filled.queue.get(target)
    assert got is not None and got.state == "dead"
