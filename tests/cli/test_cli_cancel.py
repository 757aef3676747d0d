"""``exqueue cancel ID [--delete]``: waiting jobs kept dead as "cancelled" or removed."""

from __future__ import annotations

from pathlib import Path

import exqueue
from exqueue.storage import CANCELLED
from tests.support.cli import cli


def test_cancel_keeps_or_deletes_waiting_jobs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    queue = exqueue.Queue(url)
    ids = queue.enqueue_many(
        [exqueue.Call("w", (), {}), exqueue.Call("w", (), {})], allow_unknown=True
    )
    done = cli("cancel", ids[0], "--storage", url)
    assert done.returncode == 0 and f"cancelled {ids[0]} (kept as dead)" in done.stdout
    gone = cli("cancel", "--delete", ids[1], "--storage", url)
    assert gone.returncode == 0 and f"cancelled and deleted {ids[1]}" in gone.stdout
    record = queue.storage.get(ids[0])
    assert record is not None and record.state == "dead" and record.errors == (CANCELLED,)
    assert queue.storage.get(ids[1]) is None
    missing = cli("cancel", "nope", "--storage", url)
    assert missing.returncode == 1 and "no job with id 'nope'" in missing.stderr
    queue.close()
