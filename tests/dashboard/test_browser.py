"""The dashboard in a real browser: Debian's chromium driven by Playwright (no download).

Skips when ``/usr/bin/chromium`` or Playwright is missing, except under
``EXQUEUE_REQUIRE_SERVICES=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import os
import re
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
    from playwright.sync_api import expect

    url, filled = site
    now = time.time()
    published = {"app.serial": TypeSettings(serial=True), FINE: TypeSettings(3, global_limit=5)}
    assert isinstance(filled.queue.storage, SupportsNodes)
    filled.queue.storage.beat_node(NodeInfo("browser-node", "h", 1, now, now, {}, 0, published))
    page.goto(url + "/")
    for name in ["Jobs", "Schedules", "Nodes", "Overview"]:
        page.get_by_role("link", name=name, exact=True).click()
        # A click starts the navigation; these assertions retry until the new page is shown.
        expect(page.locator("nav a[aria-current=page]")).to_have_text(name)
        page.wait_for_load_state()
        assert page.evaluate("window.__pwned") is None
    expect(page.locator("[data-total=dead]")).to_have_text("3")
    expect(page.locator("svg.chart rect.succeeded")).to_have_count(1)
    expect(page.locator('tr[data-type="app.serial"] [data-serial]')).to_have_text("serial")
    expect(page.locator(f'tr[data-type="{FINE}"]')).to_contain_text(
        "at most 5 running in the cluster"
    )
    page.goto(url + "/nodes")
    expect(page.locator("table")).to_contain_text(f"node {SCRIPT}")
    page.goto(url + "/schedules")
    expect(page.locator("table")).to_contain_text(f"nightly {SCRIPT}")
    expect(page.locator("table")).to_contain_text("not registered on any live node")
    page.goto(f"{url}/job/{filled.dead[0]}")
    expect(page.locator("pre.traceback").first).to_contain_text(SCRIPT)
    expect(page.locator("img")).to_have_count(0)
    assert page.evaluate("window.__pwned") is None
    assert page.problems == []


def test_filter_open_retry_and_bulk_delete(site: tuple[str, Filled], page: Any) -> None:
    from playwright.sync_api import expect

    url, filled = site
    page.goto(url + "/jobs")
    rows = page.locator("table.jobs tbody tr")
    expect(rows).to_have_count(6)
    page.select_option("select[name=state]", "dead")
    page.get_by_role("button", name="Filter").click()
    # Every check after a click retries until the page it navigated to is shown: a plain
    # count() or is_visible() may still read the page the click left.
    expect(page).to_have_url(re.compile(r"state=dead"))
    expect(rows).to_have_count(3)
    page.select_option("select[name=worker]", FINE)
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("No jobs match.")).to_be_visible()
    page.select_option("select[name=worker]", FAILING)
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(re.escape(f"worker={FAILING}")))
    expect(rows).to_have_count(3)

    first = rows.first.locator("a.mono").get_attribute("title")
    assert first is not None
    rows.first.locator("a.mono").click()
    expect(page.locator("h1")).to_contain_text(first)
    expect(page.locator("pre.traceback")).to_have_count(1)
    page.go_back()
    expect(rows).to_have_count(3)

    rows.first.get_by_role("button", name="Retry").click()
    expect(page.locator("p.note")).to_contain_text("retried dead job")
    expect(rows).to_have_count(2)
    expect(page.locator("table.jobs")).not_to_contain_text(first)
    assert filled.queue.stats()[FAILING].waiting == 1

    page.get_by_role("link", name="Delete all…").click()
    expect(page.locator("#confirm-count")).to_have_text("2")
    expect(page.locator("h1")).to_contain_text("Delete 2 dead jobs?")
    page.get_by_role("button", name="Yes, delete 2 jobs").click()
    expect(page.locator("p.note")).to_contain_text("deleted 2 dead jobs")
    expect(page.get_by_text("No jobs match.")).to_be_visible()
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
