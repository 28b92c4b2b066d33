"""Blocks of a docs file written by a tool: the text between ``<!-- NAME begin -->`` and ``<!-- NAME end -->``.

A tool that prints figures the docs quote writes them into the docs itself (``--write_docs``), and a test
regenerates the block and compares, so the docs cannot drift from what the tool prints.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from utils.errors import UserError
from utils.io import atomic_write_text


class DocBlockError(UserError, ValueError):
    """A docs file without the markers of the block a tool writes, or with them out of order."""


def markers(name: str) -> tuple[str, str]:
    """The begin and end lines around block ``name``."""
    return f"<!-- {name} begin -->", f"<!-- {name} end -->"


def _span(text: str, name: str, source: str) -> tuple[int, int]:
    """Start and end offsets of the block's content (between the marker lines) in ``text``."""
    begin, end = markers(name)
    start, stop = text.find(begin + "\n"), text.find("\n" + end)
    if start < 0 or stop < start or text.count(begin) != 1 or text.count(end) != 1:
        raise DocBlockError(f"{source}: expected one line '{begin}' and, after it, one line '{end}' around the "
                            f"block to write")
    return start + len(begin) + 1, stop + 1


def _read(path: str | os.PathLike) -> str:
    if not Path(path).is_file():
        raise DocBlockError(f"{path}: no such file; name the docs file that holds the block")
    return Path(path).read_text(encoding="utf-8")


def block_names(path: str | os.PathLike, prefix: str) -> list[str]:
    """Names of the blocks in the file at ``path`` that start with ``prefix``, in file order."""
    return re.findall(rf"^<!-- ({re.escape(prefix)}\S*) begin -->$", _read(path), flags=re.MULTILINE)


def read_block(path: str | os.PathLike, name: str) -> str:
    """The content of block ``name`` in the file at ``path`` (without the marker lines)."""
    text = _read(path)
    start, stop = _span(text, name, str(path))
    return text[start:stop]


def write_block(path: str | os.PathLike, name: str, content: str) -> None:
    """Replace block ``name`` of the file at ``path`` with ``content`` (atomically); the rest stays as it is."""
    text = _read(path)
    start, stop = _span(text, name, str(path))
    atomic_write_text(Path(path), text[:start] + content.rstrip("\n") + "\n" + text[stop:])
