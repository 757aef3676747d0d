"""The README's hooks example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_hooks_example_runs_as_written(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Hooks, metrics, tracing, live nodes", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    (tmp_path / "observe_example.py").write_text(match.group(1))
    result = subprocess.run(
        [sys.executable, "observe_example.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("dead: __main__.charge ")
    assert lines[0].endswith("card declined for order 7")
    assert lines[1:] == ["__main__.charge succeeded 0 dead 1"]
