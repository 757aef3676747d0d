"""Run the ``exqueue`` command line in a child process, as an operator would."""

from __future__ import annotations

import subprocess
import sys


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exqueue", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
