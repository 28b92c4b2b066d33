"""Logging to the console and to the run's log file (rank 0 only; other ranks log warnings to the console).

Until the run folder exists (it is made only once every check has passed) records are kept in memory and
written to the file when it is attached, so a run that fails early leaves no folder and no log behind.
"""
from __future__ import annotations

import logging
import sys
from logging.handlers import BufferingHandler
from pathlib import Path

_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"
PROJECT_LOGGER = "sgiha"
BUFFER_CAPACITY = 100_000  # records kept before the log file exists (start-up logs a few dozen)
_WARNING_FORMAT = "warning: %(message)s"  # the tools' warnings, in the style of their 'error: ...' line


class _StartupBuffer(BufferingHandler):
    """Holds records until ``attach_log_file``; never flushes by itself."""

    def shouldFlush(self, record: logging.LogRecord) -> bool:
        return False


def _bare_root(level: int) -> logging.Logger:
    """The root logger at ``level`` without handlers: a second setup replaces the first."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    return root


def setup_logger(run_dir: str | Path | None = None, rank: int = 0, filename: str = "train.log",
                 buffer: bool = False) -> logging.Logger:
    """Configure the root logger once per run; returns the project logger.

    ``buffer``: keep the records until ``attach_log_file`` names the file (``run_dir`` is then None).
    """
    root = _bare_root(logging.INFO if rank == 0 else logging.WARNING)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    root.addHandler(console)
    if run_dir is not None and rank == 0:
        attach_log_file(run_dir, filename)
    elif buffer and rank == 0:
        root.addHandler(_StartupBuffer(BUFFER_CAPACITY))
    return logging.getLogger(PROJECT_LOGGER)


def attach_log_file(run_dir: str | Path, filename: str = "train.log") -> None:
    """Log to ``<run_dir>/<filename>`` from now on, after the records held since start-up."""
    root = logging.getLogger()
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(Path(run_dir) / filename, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter(_FORMAT))
    for handler in [h for h in root.handlers if isinstance(h, _StartupBuffer)]:
        for record in handler.buffer:
            file_handler.handle(record)
        root.removeHandler(handler)
        handler.close()
    root.addHandler(file_handler)


def log_to_file(message: str) -> None:
    """Write an ERROR line to the log file only (the console already gets the entry point's 'error:' line)."""
    record = logging.getLogger(PROJECT_LOGGER).makeRecord(PROJECT_LOGGER, logging.ERROR, __file__, 0, message, None,
                                                         None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def setup_warning_logger() -> None:
    """Warnings only, as 'warning: ...' lines on stderr: for tools whose stdout is their result (a table)."""
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(_WARNING_FORMAT))
    _bare_root(logging.WARNING).addHandler(console)
