"""An exclusive lock on a file (fcntl.flock) around work that several commands may need done once.

The kernel drops the lock when its holder exits, killed or not, so a lock file never outlives the build it guards.
The holder writes what it is doing into the file: a command that has to wait says what it waits for.
"""
from __future__ import annotations

import fcntl
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

logger = logging.getLogger("sgiha")


@contextmanager
def exclusive(path: str | os.PathLike, doing: str) -> Iterator[None]:
    """Hold the lock on ``path`` (made when missing) for the ``with`` body; ``doing`` is written into the file.

    While another process holds it, one line names the holder's work and the lock file, and the call waits.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another command"
            logger.info("waiting for %s (lock %s): this command goes on when that is done", holder, path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"process {os.getpid()}: {doing}\n")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
