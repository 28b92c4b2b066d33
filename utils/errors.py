"""The base class of every mistake in the user's input (config, data, weights, run folders, checkpoints).

Entry points (train.py, test.py, tools/*.py) catch ``UserError`` and print one ``error: ...`` line; anything
else is a bug and keeps its traceback. Each package derives its own error from this one, so ``utils`` never
imports upwards.
"""
from __future__ import annotations

# torch re-raises an exception from a DataLoader worker with the worker's traceback in the message.
WORKER_TRACEBACK_MARK = "Original Traceback"


class UserError(Exception):
    """Input that does not fit what the project expects; the message names the file or key and the fix."""


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line; for an error re-raised from a loader worker, the worker's message."""
    text = str(exc).strip()
    if WORKER_TRACEBACK_MARK in text:
        last = text.splitlines()[-1]  # '<module>.<Class>: <message>'
        _, sep, message = last.partition(f"{type(exc).__name__}: ")
        text = message if sep else last
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())
