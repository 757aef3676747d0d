"""``queue.get`` and ``exqueue show`` for a job that failed more often than it keeps errors."""

from __future__ import annotations

import json
from pathlib import Path

import exqueue
from exqueue.storage import ERRORS_KEPT
from tests.support.cli import cli


def test_show_says_how_many_errors_and_numbers_the_kept_ones(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    queue = exqueue.Queue(url)
    queue.worker(name="app.flaky")(lambda n: None)
    job_id = queue.enqueue_many([exqueue.Call("app.flaky", (7,))])[0]
    storage = queue.storage
    for n in range(1, 26):
        token = f"t{n}"
        assert storage.claim("app.flaky", 1, now=3e9 + n, owner="o", token=token, lease_until=4e9)
        if n < 25:
            assert storage.schedule_retry(job_id, token, run_at=0.0, error=f"boom number {n}")
        else:
            assert storage.bury(job_id, token, error=f"boom number {n}")
    job = queue.get(job_id)
    assert job is not None and job.error_count == 25 and len(job.errors) == ERRORS_KEPT + 1
    assert job.error_numbers == [1, *range(6, 26)]
    storage.close()

    shown = cli("show", job_id, "--storage", url)
    assert shown.returncode == 0, shown.stderr
    assert "25 errors, showing the first and last 20" in shown.stdout
    assert "error 1 of 25:\nboom number 1\n" in shown.stdout
    assert "error 6 of 25:\nboom number 6\n" in shown.stdout
    assert "error 25 of 25:\nboom number 25" in shown.stdout
    assert "boom number 5\n" not in shown.stdout and "error 21 of 21" not in shown.stdout
    as_json = json.loads(cli("show", job_id, "--json", "--storage", url).stdout)
    assert as_json["error_count"] == 25 and len(as_json["errors"]) == 21
