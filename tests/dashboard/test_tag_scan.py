"""A tag filter reads in bounded steps (capability job_scan): partial pages with a
"continue" link, and bulk actions in bounded batches, losing no matching job."""

from __future__ import annotations

import re

import pytest

from exqueue.dashboard import create_app, reads
from tests.dashboard.conftest import client_for
from tests.dashboard.helpers import Filled

CONTINUE = re.compile(r'<a href="(/jobs\?[^"]*)" rel="next">Continue searching')


def follow(client: object, query: dict[str, str]) -> tuple[list[str], int]:
    """Every job id listed by following the "continue" links; and the pages read."""
    page = client.get("/jobs", params=query)  # type: ignore[attr-defined]
    seen, pages = [], 1
    while True:
        assert page.status_code == 200
        seen += re.findall(r'href="/job/([0-9a-f]{32})"', page.text)
        link = CONTINUE.search(page.text)
        if link is None:
            assert "Continue searching" not in page.text
            return seen, pages
        assert "Searched up to 2 more jobs" in page.text
        page = client.get(link.group(1).replace("&amp;", "&"))  # type: ignore[attr-defined]
        pages += 1


def test_a_rare_tag_gives_partial_pages_and_loses_nothing(
    filled: Filled, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "job_scan" in filled.queue.storage.capabilities
    monkeypatch.setattr(reads, "SCAN_BUDGET", 2)
    client = client_for(create_app(filled.queue))
    # 3 dead jobs: two read, none match, "continue"; then the last one, and the end.
    none, pages = follow(client, {"state": "dead", "tag": "batch=zzz"})
    assert (none, pages) == ([], 2)
    # Any state: 3 tagged dead jobs, then 3 untagged (2 waiting, 1 scheduled).
    found, pages = follow(client, {"tag": "batch=b1"})
    assert found == filled.dead and pages == 3
    # The bulk confirmation counts through the same bounded reads.
    confirm = client.get("/jobs/bulk", params={"op": "retry", "state": "dead", "tag": "batch=b1"})
    assert 'id="confirm-count">3<' in confirm.text
