"""``exqueue schedules``, ``schedule-pause`` and ``schedule-resume`` end to end, in subprocesses."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

import exqueue
from tests.support.cli import cli

APP = textwrap.dedent(
    """
    import os
    import exqueue

    queue = exqueue.Queue(os.environ["APP_URL"], clock=lambda: 1_800_000_000.5)

    @queue.periodic("30 2 * * *", tz="Europe/Stockholm", name="nightly")
    def nightly():
        pass
    """
)


def _app(tmp_path: Path) -> tuple[str, dict[str, str]]:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    (tmp_path / "cronapp.py").write_text(APP)
    env = dict(os.environ, APP_URL=url)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    return url, env


def test_schedules_lists_registered_and_stored_ones(tmp_path: Path) -> None:
    url, env = _app(tmp_path)
    # A schedule the app no longer has (renamed): stored, not registered.
    queue = exqueue.Queue(url, clock=lambda: 1_700_000_000.0)
    queue.worker(name="old.job")(lambda: None)
    queue.schedule("old-name", "* * * * *", queue.workers["old.job"].call())
    queue.storage.pause_schedule("old-name", True)  # type: ignore[attr-defined]
    queue.storage.close()

    listed = cli("schedules", "--app", "cronapp:queue", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["nightly"] == {
        "name": "nightly",
        "expression": "30 2 * * *",
        "zone": "Europe/Stockholm",
        "missed": "skip",
        "next_fire": "2027-01-16T02:30:00+01:00",
        "last_tick": None,
        "paused": False,
        "registered": True,
        "worker": "cronapp.nightly",
        "live": False,  # no live node fires it (the app is not running)
        "published": [],
        "silent_nodes": [],
    }
    assert rows["old-name"]["registered"] is False and rows["old-name"]["paused"] is True

    table = cli("schedules", "--app", "cronapp:queue", env=env)
    assert table.returncode == 0, table.stderr
    assert "nightly" in table.stdout and "NOT IN APP" in table.stdout
    bare = cli("schedules", "--storage", url)
    assert bare.returncode == 0 and "old-name" in bare.stdout and "--app shows" in bare.stdout

    # A live node publishes its schedules: the storage URL alone shows the definition.
    store = exqueue.Queue(url).storage
    definition = exqueue.ScheduleSettings("cronapp.nightly", "30 2 * * *", zone="Europe/Stockholm")
    now = time.time()
    node = exqueue.NodeInfo("n1", "h", 1, now, now + 600, {}, 0, {}, {"nightly": definition})
    store.beat_node(node)  # type: ignore[attr-defined]
    store.close()
    published = cli("schedules", "--storage", url, "--json")
    assert published.returncode == 0, published.stderr
    row = {r["name"]: r for r in json.loads(published.stdout)}["nightly"]
    assert (row["expression"], row["zone"], row["live"], row["registered"]) == (
        "30 2 * * *",
        "Europe/Stockholm",
        True,
        False,
    )
    assert row["next_fire"].endswith(("T02:30:00+01:00", "T02:30:00+02:00", "T03:00:00+02:00"))
    table = cli("schedules", "--storage", url)
    assert "30 2 * * *" in table.stdout and "Europe/Stockholm" in table.stdout


def test_pause_and_resume_from_the_command_line(tmp_path: Path) -> None:
    url, env = _app(tmp_path)
    paused = cli("schedule-pause", "nightly", "--app", "cronapp:queue", env=env)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == "paused nightly"
    listed = json.loads(cli("schedules", "--storage", url, "--json").stdout)
    assert listed == [
        {
            "name": "nightly",
            "expression": None,
            "zone": None,
            "missed": None,
            "next_fire": None,
            "last_tick": None,
            "paused": True,
            "registered": False,
            "worker": None,
            "live": False,
            "published": [],
            "silent_nodes": [],
        }
    ]
    resumed = cli("schedule-resume", "nightly", "--storage", url)
    assert resumed.returncode == 0 and resumed.stdout.strip() == "resumed nightly"
    assert json.loads(cli("schedules", "--storage", url, "--json").stdout)[0]["paused"] is False
    unknown = cli("schedule-pause", "nope", "--storage", url)
    assert unknown.returncode == 1
    assert "no schedule named 'nope'" in unknown.stderr


def test_worker_no_schedules_opts_the_node_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from exqueue.cli import main

    url, env = _app(tmp_path)
    monkeypatch.setenv("APP_URL", url)
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[bool] = []
    # The worker's blocking run is replaced: this test only reads what it was given.
    monkeypatch.setattr(
        exqueue.Queue,
        "run",
        lambda self, stop_timeout=30.0: seen.append(self._node_config().scheduler is None),
    )
    try:
        for flags, opted_out in (([], False), (["--no-schedules"], True)):
            result = CliRunner().invoke(main, ["worker", "--app", "cronapp:queue", *flags])
            assert result.exit_code == 0, result.output
            assert seen.pop() is opted_out
    finally:
        sys.modules.pop("cronapp", None)
