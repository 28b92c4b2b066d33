"""bench/bench_metrics.py at tiny sizes: it runs, both implementations agree, and the table is written."""
import pytest
import torch

from bench import bench_metrics
from tests.test_metrics import reference_metrics


def test_tiny_run_writes_a_table(tmp_path):
    out = tmp_path / "bench_metrics.md"
    table = bench_metrics.main(["--tiny", "--out", str(out)])
    assert out.read_text(encoding="utf-8") == table
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| benchmark")]
    assert [r.split("|")[1].strip() for r in rows] == ["ICFG-PEDES", "CUHK-PEDES", "RSTPReid"]
    for row in rows:
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert float(cells[2]) >= 0 and float(cells[4]) >= 0  # times
        assert float(cells[8]) <= bench_metrics.TOLERANCE


def test_usual_implementation_matches_reference():
    similarity, q_pids, g_pids = bench_metrics.synthetic_problem(30, 45, 7, torch.device("cpu"), seed=3)
    got = bench_metrics.usual_metrics(similarity, q_pids, g_pids)
    expected = reference_metrics(similarity, q_pids, g_pids)
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-4), key


def test_synthetic_problem_structure():
    similarity, q_pids, g_pids = bench_metrics.synthetic_problem(50, 20, 6, torch.device("cpu"))
    assert similarity.shape == (50, 20) and similarity.dtype == torch.float32
    counts = torch.bincount(g_pids, minlength=6)
    assert counts.min() >= 3  # several images per identity
    assert torch.equal(q_pids, g_pids[torch.arange(50) % 20])  # query i describes image i % gallery
    same = q_pids[:, None] == g_pids[None, :]
    assert similarity[same].mean() > similarity[~same].mean() + 0.2  # positives score clearly higher
