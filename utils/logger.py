"""Logging to the console and to <run>/train.log (rank 0 only; other ranks log warnings to the console)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"
_WARNING_FORMAT = "warning: %(message)s"  # the tools' warnings, in the style of their 'error: ...' line


def _bare_root(level: int) -> logging.Logger:
    """The root logger at ``level`` without handlers: a second setup replaces the first."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    return root


def setup_logger(run_dir: str | Path | None = None, rank: int = 0, filename: str = "train.log") -> logging.Logger:
    """Configure the root logger once per run; returns the project logger 'sgiha'."""
    root = _bare_root(logging.INFO if rank == 0 else logging.WARNING)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    root.addHandler(console)
    if run_dir is not None and rank == 0:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(Path(run_dir) / filename, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(file_handler)
    return logging.getLogger("sgiha")


def setup_warning_logger() -> None:
    """Warnings only, as 'warning: ...' lines on stderr: for tools whose stdout is their result (a table)."""
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(_WARNING_FORMAT))
    _bare_root(logging.WARNING).addHandler(console)
