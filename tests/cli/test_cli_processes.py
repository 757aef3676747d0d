"""``exqueue worker``'s process count: a process per CPU for ``cpu_bound`` apps, else one.

``--processes`` (or ``EXQUEUE_PROCESSES``) overrides it.

The supervisor and the blocking run are replaced: these tests read only which
one the command chose, and with how many processes (no process is started).
"""

from __future__ import annotations

import io
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import exqueue
from exqueue import supervisor
from exqueue.errors import ConfigurationError

APP = textwrap.dedent(
    """
    import os
    import exqueue

    queue = exqueue.Queue(os.environ["APP_URL"])

    @queue.worker(name="app.fetch")
    def fetch(n):
        pass

    if os.environ.get("APP_CPU_BOUND"):
        @queue.worker(name="app.render", cpu_bound=True)
        def render(n):
            pass
    """
)


@pytest.fixture
def chosen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Process counts the worker command chose, one per invocation (1: ran in-process)."""
    (tmp_path / "procapp.py").write_text(APP)
    monkeypatch.setenv("APP_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    monkeypatch.delenv("EXQUEUE_PROCESSES", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(supervisor, "usable_cpus", lambda: 3)
    seen: list[int] = []

    def supervise(app: str, processes: int, *rest: Any) -> int:
        seen.append(processes)
        return 0

    monkeypatch.setattr(supervisor, "supervise", supervise)
    monkeypatch.setattr(exqueue.Queue, "run", lambda self, stop_timeout=30.0: seen.append(1))
    yield seen
    sys.modules.pop("procapp", None)


def _worker(*flags: str, env: dict[str, str] | None = None) -> None:
    from click.testing import CliRunner

    from exqueue.cli import main

    sys.modules.pop("procapp", None)  # APP_CPU_BOUND is read at import
    result = CliRunner().invoke(main, ["worker", "--app", "procapp:queue", *flags], env=env)
    assert result.exit_code == 0, result.output


def test_cpu_bound_app_gets_one_process_per_cpu_unless_overridden(
    chosen: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_CPU_BOUND", "1")
    _worker()
    assert chosen.pop() == 3
    _worker("--processes", "1")
    assert chosen.pop() == 1
    _worker("--processes", "2")
    assert chosen.pop() == 2
    _worker(env={"EXQUEUE_PROCESSES": "1"})
    assert chosen.pop() == 1
    assert not chosen


def test_app_without_cpu_bound_types_gets_one_process(chosen: list[int]) -> None:
    _worker()
    assert chosen == [1]
    _worker("--processes", "4")
    assert chosen == [1, 4]


def test_processes_below_one_is_refused(chosen: list[int]) -> None:
    from click.testing import CliRunner

    from exqueue.cli import main

    result = CliRunner().invoke(main, ["worker", "--app", "procapp:queue", "--processes", "0"])
    assert result.exit_code == 2
    assert "--processes" in result.output
    assert not chosen


def test_default_processes_rules(tmp_path: Path) -> None:
    from exqueue_memory import MemoryStorage

    memory = exqueue.Queue(MemoryStorage())
    memory.worker(name="m.heavy", cpu_bound=True)(lambda: None)
    count, reason = supervisor.default_processes(memory, cpus=4)
    assert count == 1 and "one process" in reason  # not shareable between processes

    shared = exqueue.Queue(f"sqlite:///{tmp_path / 'jobs.db'}")
    shared.worker(name="s.light")(lambda: None)
    assert supervisor.default_processes(shared, cpus=4)[0] == 1
    shared.worker(name="s.heavy", cpu_bound=True)(lambda: None)
    count, reason = supervisor.default_processes(shared, cpus=4)
    assert count == 4 and "s.heavy" in reason
    assert supervisor.usable_cpus() >= 1


def test_cpu_bound_must_be_a_bool() -> None:
    from exqueue_memory import MemoryStorage

    queue = exqueue.Queue(MemoryStorage())
    with pytest.raises(ConfigurationError, match="cpu_bound must be True or False"):
        queue.worker(name="x", cpu_bound="yes")(lambda: None)  # type: ignore[call-overload]
    assert "x" not in queue.workers


def test_children_are_told_one_process_each(monkeypatch: pytest.MonkeyPatch) -> None:
    commands: list[list[str]] = []

    class FakeProcess:
        def __init__(self, command: list[str], stderr: Any) -> None:
            commands.append(command)
            self.stderr = io.BytesIO(b"")

    monkeypatch.setattr(supervisor.subprocess, "Popen", FakeProcess)
    supervisor._Child("procapp:queue", "n-0", 30.0, [])
    [command] = commands
    at = command.index("--processes")
    assert command[at + 1] == "1"  # a child never supervises children of its own
