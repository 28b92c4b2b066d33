"""Shared by the wrong-command tests: what a user error must look like, and a snapshot of the files around it."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from utils.cli import USER_ERROR_EXIT, run_cli

REPO = Path(__file__).resolve().parents[1]
# run_cli's line ('error: ...'), or argparse's ('<program>: error: ...') for a malformed option value
ERROR_LINE = re.compile(r"^(?:[\w.]+: )?error: ")


def snapshot(*roots: Path) -> dict[str, tuple[int, int] | None]:
    """(mtime in ns, size) of everything under ``roots`` and of the repository's top-level files (default output
    names are relative to the working folder); the repository's folders by name only, as Python may add a
    __pycache__ to them."""
    stamps: dict[str, tuple[int, int] | None] = {str(p): None for p in REPO.iterdir() if p.is_dir()}
    inside = [path for root in roots for path in root.rglob("*")]
    for path in [*inside, *(p for p in REPO.iterdir() if not p.is_dir())]:
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


EntryPoint = Callable[[Sequence[str]], Any]  # a script's main(argv)


def run_in_process(script: str, main: EntryPoint, argv: list[str], capsys) -> subprocess.CompletedProcess:
    """The command line ``python script *argv`` run in this process (``main`` through run_cli, as the script's
    ``__main__`` does): its exit status and what it printed. The ``entry_point`` fixture puts back what a run
    changes for the whole process."""
    sys.argv = [script, *argv]
    try:
        run_cli(lambda: main(argv))
        status = 0
    except SystemExit as exc:  # sys.exit(None) is status 0; a message instead of a number is status 1
        status = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess([script, *argv], status, captured.out, captured.err)
