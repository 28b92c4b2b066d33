"""bench/bench_plan.py at tiny sizes: the planner's figures next to the bench's measured ones."""
import pytest

from bench import bench_plan

PEAK_TOLERANCE = 0.15  # issue 17: predicted CPU peak within 15% of the measured one


def rows_of(table: str) -> list[dict[str, str]]:
    """The markdown table's body rows as {header cell: cell}."""
    lines = [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines() if line.startswith("| ")]
    return [dict(zip(lines[0], cells)) for cells in lines[1:]]


@pytest.mark.slow
def test_tiny_comparison_table_has_equal_flops_and_close_peaks(tmp_path):
    out = tmp_path / "plan.md"
    table = bench_plan.main(["--tiny", "--batch_sizes", "4", "8", "--recipes", "irra_sgiha", "--out", str(out)])
    assert out.read_text(encoding="utf-8") == table
    rows = rows_of(table)
    assert [(r["recipe"], r["batch"]) for r in rows] == [("irra_sgiha", "4"), ("irra_sgiha", "8")]
    for row in rows:
        assert row["equal"] == "yes" and row["GFLOP predicted"] == row["GFLOP real step"]
        assert abs(float(row["predicted / measured"]) - 1) <= PEAK_TOLERANCE
