"""Logging to the console and to <run>/train.log (rank 0 only; other ranks log warnings to the console)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


def setup_logger(run_dir: str | Path | None = None, rank: int = 0, filename: str = "train.log") -> logging.Logger:
    """Configure the root logger once per run; returns the project logger 'sgiha'."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    root.addHandler(console)
    if run_dir is not None and rank == 0:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(Path(run_dir) / filename, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(file_handler)
    return logging.getLogger("sgiha")
