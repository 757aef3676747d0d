"""The dashboard app over each backend, through Starlette's TestClient (no browser)."""

from __future__ import annotations

import logging
import re

import pytest

from exqueue.dashboard import create_app
from tests.dashboard.conftest import client_for
from tests.dashboard.helpers import FAILING, FINE, HOSTILE, IMG, SCRIPT, Filled, form_token

PAGES = ["/", "/?range=day", "/jobs", "/jobs?state=dead", "/schedules", "/nodes"]


def dead_ids(client: object, **query: str) -> list[str]:
    page = client.get("/jobs", params={"state": "dead", **query})  # type: ignore[attr-defined]
    assert page.status_code == 200
    return re.findall(r'href="/job/([0-9a-f]{32})"', page.text)


def assert_escaped(text: str) -> None:
    for raw in HOSTILE:
        assert raw not in text
    assert "&lt;script&gt;" in text
    assert "onerror" not in text or "&#34;&gt;&lt;img" in text or "&quot;&gt;&lt;img" in text


def test_every_page_renders_escaped_with_security_headers(filled: Filled) -> None:
    client = client_for(create_app(filled.queue))
    for path in PAGES:
        page = client.get(path)
        assert page.status_code == 200, (path, page.text[:500])
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "<script>" not in page.text.replace('<script src="/static/dashboard.js" defer>', "")
    assert_escaped(client.get("/nodes").text)
    assert_escaped(client.get("/schedules").text)
    job = client.get(f"/job/{filled.dead[0]}")
    assert job.status_code == 200
    assert_escaped(job.text)
    # The error's traceback is there in full, as text.
    assert "Traceback (most recent call last)" in job.text
    assert "RuntimeError: cannot send &lt;script&gt;" in job.text
    # Arguments, keyword arguments and meta are shown (escaped).
    assert "note" in job.text and "team" in job.text and "batch" in job.text

    overview = client.get("/")
    assert re.search(r'data-total="dead">3<', overview.text)
    assert re.search(rf'data-count="{re.escape(FINE)}" data-key="waiting">2<', overview.text)
    assert re.search(rf'data-count="{re.escape(FINE)}" data-key="scheduled">1<', overview.text)
    counts = client.get("/api/counts").json()
    assert counts["totals"] == {"waiting": 2, "scheduled": 1, "running": 0, "dead": 3}
    assert counts["workers"][FAILING]["dead"] == 3


def test_filters_search_and_unknown_job(filled: Filled) -> None:
    client = client_for(create_app(filled.queue))
    assert sorted(dead_ids(client)) == sorted(filled.dead)
    assert dead_ids(client, worker=FINE) == []
    assert sorted(dead_ids(client, tag="batch=b1")) == sorted(filled.dead)
    assert dead_ids(client, tag="batch=b2") == []
    waiting = client.get("/jobs", params={"state": "waiting", "worker": FINE}).text
    assert all(job_id in waiting for job_id in filled.waiting + filled.scheduled)
    assert "scheduled" in waiting
    found = client.get("/jobs", params={"id": filled.waiting[0]}, follow_redirects=False)
    assert found.status_code == 303 and found.headers["location"] == f"/job/{filled.waiting[0]}"
    missing = client.get("/jobs", params={"id": SCRIPT})
    assert "no job with id" in missing.text and SCRIPT not in missing.text
    assert client.get(f"/job/{IMG}").status_code == 404
    bad = client.get("/jobs", params={"state": "nope", "tag": "novalue"})
    assert "unknown state" in bad.text and "KEY=VALUE" in bad.text


def test_actions_need_post_and_csrf_and_are_logged(
    filled: Filled, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(create_app(filled.queue))
    token = form_token(client.get("/jobs?state=dead").text)
    target = filled.dead[0]
    assert client.get("/actions/retry", params={"job_id": target}).status_code == 405
    refused = client.post("/actions/retry", data={"job_id": target})
    assert refused.status_code == 403 and "CSRF" in refused.text
    forged = client.post("/actions/retry", data={"job_id": target, "csrf": "0" * 64})
    assert forged.status_code == 403
    cross = client.post(
        "/actions/retry",
        data={"job_id": target, "csrf": token},
        headers={"origin": "http://evil.example"},
    )
    assert cross.status_code == 403
    # A fresh browser (another cookie) cannot reuse this browser's token.
    stranger = client_for(create_app(filled.queue))
    stranger.get("/")
    assert (
        stranger.post("/actions/retry", data={"job_id": target, "csrf": token}).status_code == 403
    )
    assert target in dead_ids(client)

    with caplog.at_level(logging.INFO, logger="exqueue.dashboard"):
        done = client.post(
            "/actions/retry",
            data={"job_id": target, "csrf": token, "next": "/jobs?state=dead"},
            follow_redirects=False,
        )
    assert done.status_code == 303 and done.headers["location"] == "/jobs?state=dead"
    assert target not in dead_ids(client)
    assert len(dead_ids(client)) == 2
    assert any(
        "anonymous@" in r.getMessage() and "retried dead job" in r.getMessage()
        for r in caplog.records
    )

    deleted = client.post(
        "/actions/delete", data={"job_id": filled.dead[1], "csrf": token}, follow_redirects=True
    )
    assert f"deleted job {filled.dead[1]}" in deleted.text
    assert filled.queue.get(filled.dead[1]) is None
    # An open redirect is not offered: a foreign "next" goes back to the overview.
    away = client.post(
        "/actions/delete",
        data={"job_id": "nope", "csrf": token, "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert away.headers["location"] == "/"

    if "cancel" in filled.queue.storage.capabilities:
        client.post("/actions/cancel", data={"job_id": filled.waiting[0], "csrf": token})
        cancelled = filled.queue.get(filled.waiting[0])
        assert cancelled is not None and cancelled.state == "dead"


def test_bulk_retry_and_delete_state_the_count(filled: Filled) -> None:
    client = client_for(create_app(filled.queue))
    confirm = client.get("/jobs/bulk", params={"op": "delete", "state": "dead", "worker": FAILING})
    assert confirm.status_code == 200
    assert re.search(r'id="confirm-count">3<', confirm.text)
    assert len(dead_ids(client)) == 3  # the confirmation page changed nothing
    none_tagged = client.get("/jobs/bulk", params={"op": "retry", "tag": "batch=zzz"})
    assert 'id="confirm-count">0<' in none_tagged.text
    token = form_token(confirm.text)
    retried = client.post(
        "/actions/bulk",
        data={"op": "retry", "state": "dead", "tag": "batch=b1", "count": "3", "csrf": token},
        follow_redirects=True,
    )
    assert "retried 3 dead jobs" in retried.text
    assert dead_ids(client) == []
    assert filled.queue.stats()[FAILING].waiting == 3
    filled.queue.drain(timeout=30)
    assert len(dead_ids(client)) == 3
    client.post(
        "/actions/bulk",
        data={"op": "delete", "worker": FAILING, "count": "3", "csrf": token},
    )
    assert dead_ids(client) == []
    assert filled.queue.stats()[FAILING].dead == 0


def test_schedules_pause_and_resume(filled: Filled) -> None:
    client = client_for(create_app(filled.queue))
    page = client.get("/schedules").text
    token = form_token(page)
    name = f"nightly {SCRIPT}"
    client.post("/actions/pause_schedule", data={"name": name, "csrf": token})
    assert [s.paused for s in filled.queue.schedules()] == [True]
    assert "Resume" in client.get("/schedules").text
    client.post("/actions/resume_schedule", data={"name": name, "csrf": token})
    assert [s.paused for s in filled.queue.schedules()] == [False]


def test_read_only_offers_and_accepts_no_action(filled: Filled) -> None:
    client = client_for(create_app(filled.queue, read_only=True))
    for path in [*PAGES, f"/job/{filled.dead[0]}"]:
        page = client.get(path)
        assert page.status_code == 200
        assert 'method="post"' not in page.text, path
    assert "Retry all" not in client.get("/jobs?state=dead").text
    refused = client.post("/actions/retry", data={"job_id": filled.dead[0], "csrf": "x"})
    assert refused.status_code == 403
    assert len(dead_ids(client)) == 3
