"""``exqueue nodes`` and ``exqueue stats --history`` end to end, in subprocesses."""

from __future__ import annotations

import json
import time
from pathlib import Path

import exqueue
from exqueue.storage import HistoryCount, NodeInfo, ScheduleSettings, TypeSettings
from tests.support.cli import cli


def _store(tmp_path: Path) -> tuple[str, exqueue.Queue]:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    return url, exqueue.Queue(url)


def test_nodes_lists_live_nodes(tmp_path: Path) -> None:
    url, queue = _store(tmp_path)
    storage = queue.storage
    assert isinstance(storage, exqueue.storage.SupportsNodes)
    now = time.time()
    settings = TypeSettings(1, serial=True, max_attempts=3)
    workers = {"app.send": 4, "app.post": 1}
    fires = {"tidy": ScheduleSettings("app.post", None, 60.0)}
    storage.beat_node(
        NodeInfo("web-1", "host-a", 42, now - 60, now, workers, 2, {"app.post": settings}, fires)
    )
    storage.beat_node(NodeInfo("gone-1", "host-b", 43, now - 600, now - 300, {}, 0))
    storage.close()

    listed = cli("nodes", "--storage", url, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [row["name"] for row in rows] == ["web-1"]
    assert rows[0]["workers"] == workers and rows[0]["running"] == 2
    assert rows[0]["types"] == {"app.post": settings.as_json()}
    assert TypeSettings.from_json(rows[0]["types"]["app.post"]) == settings
    assert ScheduleSettings.from_json(rows[0]["schedules"]["tidy"]) == fires["tidy"]
    assert rows[0]["host"] == "host-a" and rows[0]["pid"] == 42

    table = cli("nodes", "--storage", url)
    assert table.returncode == 0, table.stderr
    assert "web-1" in table.stdout and "app.send×4" in table.stdout
    assert "app.post×1 (serial)" in table.stdout and "app.send×4 (serial)" not in table.stdout
    assert "gone-1" not in table.stdout


def test_stats_history(tmp_path: Path) -> None:
    url, queue = _store(tmp_path)
    storage = queue.storage
    assert isinstance(storage, exqueue.storage.SupportsHistory)
    minute = int(time.time() // 60) * 60
    storage.add_history(
        [
            HistoryCount("app.send", minute, 8, 1, 1, 0.5),
            HistoryCount("app.send", minute - 120, 2, 0, 0, 0.5),
            HistoryCount("app.old", minute - 7200, 5),
        ]
    )
    storage.close()

    table = cli("stats", "--storage", url, "--history")
    assert table.returncode == 0, table.stderr
    assert "app.send" in table.stdout and "app.old" not in table.stdout
    line = next(line for line in table.stdout.splitlines() if "app.send" in line)
    assert line.split()[1:4] == ["10", "1", "1"]
    assert "83.3 ms" in line  # 1 s over 12 runs

    as_json = cli("stats", "--storage", url, "--history", "180", "--json")
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    assert {row["worker"] for row in rows} == {"app.send", "app.old"}

    bad = cli("stats", "--storage", url, "--history", "0")
    assert bad.returncode != 0 and "--history" in bad.stderr

    empty = cli("stats", "--storage", f"sqlite:///{tmp_path / 'none.db'}", "--history")
    assert empty.returncode != 0  # a mistyped store is an error, never a new one
