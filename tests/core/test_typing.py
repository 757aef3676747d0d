"""Runs mypy on tests/core/typing/check_worker_types.py: decorated workers keep their signatures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHECK = Path(__file__).parent / "typing" / "check_worker_types.py"


def _mypy(path: Path, *extra: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", *extra, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.stdout + result.stderr


def test_worker_signature_is_checked() -> None:
    # warn_unused_ignores: an ignore on a wrong call that mypy accepted is an error.
    out = _mypy(CHECK, "--warn-unused-ignores")
    assert "Success" in out, out


def test_wrong_calls_are_reported(tmp_path: Path) -> None:
    # The same file without its ignores: each deliberate wrong call must be an error.
    stripped = tmp_path / "check_worker_types.py"
    lines = CHECK.read_text().splitlines()
    stripped.write_text("\n".join(line.split("  # type: ignore")[0] for line in lines))
    expected = [
        (n, line.split("# type: ignore[")[1].rstrip("]"))
        for n, line in enumerate(lines, 1)
        if "# type: ignore[" in line
    ]
    out = _mypy(stripped)
    assert len(expected) == 5
    for n, code in expected:
        assert f"check_worker_types.py:{n}: error:" in out and f"[{code}]" in out, (n, out)
