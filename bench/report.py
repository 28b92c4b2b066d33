"""Shared output step of the benchmark scripts: print the markdown table and optionally save it."""
from __future__ import annotations

from pathlib import Path


def publish(table: str, out: Path | None) -> str:
    """Print ``table``, write it to ``out`` when given, and return it."""
    print(table)
    if out:
        out.write_text(table, encoding="utf-8")
    return table
