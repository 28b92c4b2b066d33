"""bench/toy_ablation.py at a tiny size: one row per recipe, means and stds over the seeds' own run folders."""
from __future__ import annotations

import statistics

import pytest

from bench import toy_ablation
from tests.tiny_run import make_tiny_toy, tiny_args
from utils.runs import read_test_scores


@pytest.mark.slow
def test_table_aggregates_the_runs(tmp_path):
    toy = make_tiny_toy(tmp_path / "toy")
    argv = tiny_args(toy, tmp_path / "unused")
    at = argv.index("--output_dir")
    extra = argv[2:at] + argv[at + 2:]  # the tiny sizes, without --config_file and --output_dir
    out = tmp_path / "table.md"
    table = toy_ablation.main(["--recipes", "clip_finetune", "clip_finetune_sgiha", "--seeds", "1", "2",
                               "--output_dir", str(tmp_path / "runs"), "--out", str(out), *extra])
    assert out.read_text() == table
    rows = {line.split("|")[1].strip(): line.split("|") for line in table.splitlines() if line.startswith("| clip")}
    assert set(rows) == {"clip_finetune", "clip_finetune_sgiha"}
    for recipe, cells in rows.items():
        runs = sorted((tmp_path / "runs" / recipe / "CUHK-PEDES").iterdir())
        assert len(runs) == 2 and cells[3].strip() == "2"
        r1 = [read_test_scores(r).metrics["R1"] for r in runs]
        assert cells[4].strip() == f"{statistics.fmean(r1):.2f} ± {statistics.stdev(r1):.2f}"
        has_pointing = cells[6].strip() != "-"
        assert has_pointing == (recipe == "clip_finetune_sgiha")
        if has_pointing:
            assert all((r / "grounding.png").is_file() for r in runs)
