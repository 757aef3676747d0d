"""The repository's code as it was at an earlier commit, for the upgrade tests.

A store written by an earlier version must open and upgrade in place; those
tests write it with the earlier code itself, unpacked here from git history.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

#: The repository's root (the checkout the tests run from).
ROOT = Path(__file__).resolve().parents[2]


def source_tree(revision: str, target: Path) -> Path:
    """The source at ``revision`` unpacked into ``target`` (``git archive``); the test
    fails with git's message when the revision is not in this checkout's history."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision], capture_output=True, check=False
    )
    if archive.returncode != 0:
        pytest.fail(f"git archive {revision} failed: {archive.stderr.decode()[:300]}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target
