"""Shared by the wrong-command tests: what a user error must look like, and a snapshot of the files around it."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from utils.cli import USER_ERROR_EXIT

REPO = Path(__file__).resolve().parents[1]
# run_cli's line ('error: ...'), or argparse's ('<program>: error: ...') for a malformed option value
ERROR_LINE = re.compile(r"^(?:[\w.]+: )?error: ")


def snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """(mtime in ns, size) of everything under ``root`` and of the repository's top-level files (default output
    names are relative to the working folder); the repository's folders by name only, as Python may add a
    __pycache__ to them."""
    stamps: dict[str, tuple[int, int] | None] = {str(p): None for p in REPO.iterdir() if p.is_dir()}
    for path in [*root.rglob("*"), *(p for p in REPO.iterdir() if not p.is_dir())]:
        stamps[str(path)] = (path.stat().st_mtime_ns, path.stat().st_size)
    return stamps


def assert_one_error_line(result: subprocess.CompletedProcess, names: list[str],
                          status: int = USER_ERROR_EXIT) -> str:
    """Exit ``status``, no traceback, and a last stderr line 'error: ...' that contains every one of ``names``."""
    stderr = result.stderr.strip()
    assert result.returncode == status, stderr[-3000:]
    assert "Traceback" not in stderr and "Traceback" not in result.stdout
    last = stderr.splitlines()[-1]
    assert ERROR_LINE.match(last), last
    for name in names:
        assert name in last, (name, last)
    return last
