"""Reading the benchmark scripts' markdown tables in tests."""
from __future__ import annotations


def table_rows(table: str, header: str) -> dict[str, list[str]]:
    """The body rows of a markdown table keyed by their first cell; ``header`` is the header's first cell."""
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(f"| {header}")]
    return {cells[0]: cells for cells in ([c.strip() for c in r.split("|")[1:-1]] for r in rows)}
