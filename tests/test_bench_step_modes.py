"""bench/bench_step_modes.py on the demo size, eager modes only: it runs, counts ops and writes its table."""
import pytest

from bench import bench_step_modes


@pytest.mark.slow
def test_eager_modes_write_a_table(tmp_path):
    out = tmp_path / "modes.md"
    table = bench_step_modes.main(["--sizes", "demo", "--modes", "eager-dynamic", "eager-fixed", "--repeats", "1",
                                   "--device", "cpu", "--batch_size", "4", "--out", str(out)])
    assert out.read_text(encoding="utf-8") == table
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines()
            if line.startswith("| demo")]
    assert [r[2] for r in rows] == ["eager-dynamic", "eager-fixed"]
    assert rows[0][5] == "1.00x" and all(float(r[3]) > 0 and float(r[7]) > 0 for r in rows)
    # the kept-length step's host reads and boolean indexing are ops the fixed step does not dispatch
    assert all(int(r[8]) > 0 for r in rows) and rows[0][8] != rows[1][8]
    assert rows[0][9] == rows[1][9] == ""  # no kernels generated: nothing compiled


def test_op_count_counts_each_dispatched_op():
    import torch

    with bench_step_modes.OpCount() as counter:
        x = torch.ones(3)
        (x + x).sum()
    assert counter.ops[torch.ops.aten.add.Tensor] == 1 and counter.ops[torch.ops.aten.sum.default] == 1
