"""Run the ``exqueue`` command line: in a child process, as an operator would
(:func:`cli`), or in this process on an app's memory store (:func:`app_module`,
:func:`run_app`)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import types
from collections.abc import Iterator

from click.testing import CliRunner, Result

import exqueue
from exqueue.cli import main
from tests.support.clock import FakeClock


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exqueue", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@contextlib.contextmanager
def app_module(name: str) -> Iterator[exqueue.Queue]:
    """A memory-store queue (on a fake clock) importable as ``name:queue``, for ``--app``.

    The module is removed from ``sys.modules`` afterwards.
    """
    module = types.ModuleType(name)
    queue = exqueue.Queue("memory://", clock=FakeClock())
    module.queue = queue  # type: ignore[attr-defined]
    sys.modules[name] = module
    try:
        yield queue
    finally:
        del sys.modules[name]


def run_app(name: str, *args: str) -> Result:
    """``exqueue ARGS --app name:queue``, in this process (see :func:`app_module`)."""
    return CliRunner().invoke(main, [*args, "--app", f"{name}:queue"], catch_exceptions=False)
