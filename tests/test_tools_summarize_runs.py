"""tools/summarize_runs.py and utils/runs.py: per-run scores, seed groups with mean ± std, fallbacks, errors."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from tools import summarize_runs
from utils.config import load_config, save_config
from utils.runs import RunError, read_test_scores, run_config, run_label, seed_groups, unique_labels

KEYS = ("R1", "R5", "R10", "mAP", "mINP")


def make_run(root: Path, folder: str, overrides: dict, results: dict | None = None,
             rows: list[dict] | None = None) -> Path:
    run = root / folder
    save_config(load_config(None, overrides), run / "configs.yaml")
    if results is not None:
        (run / "test_results.json").write_text(json.dumps(results))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows or [{"epoch": 1, "loss": 1.0}]))
    return run


def scores(r1: float, base: float = 50.0) -> dict:
    return {"R1": r1, "R5": r1 + 10, "R10": r1 + 15, "mAP": base, "mINP": base - 10}


def table_rows(markdown: str, first_cell: str) -> list[list[str]]:
    """Cells of the markdown rows whose first cell starts with ``first_cell``."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in markdown.splitlines()
            if line.startswith("|")]
    return [r for r in rows if r[0].startswith(first_cell)]


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    seeds = [make_run(tmp_path, f"2024010{i}_120000_irra_sgiha", {"seed": s, "name": "irra_sgiha"},
                      scores(r1, base)) for i, (s, r1, base) in enumerate([(1, 60.0, 50.0), (2, 62.0, 51.0),
                                                                           (3, 64.0, 55.0)], start=1)]
    rows = [{"epoch": 1, "R1": 40.0, **{k: 1.0 for k in KEYS[1:]}},
            {"epoch": 2, **scores(45.0, 30.0)},
            {"epoch": 3, "R1": 45.0, **{k: 2.0 for k in KEYS[1:]}}]  # a tie: the earlier epoch is best.pth
    other = make_run(tmp_path, "20240105_120000_irra_sgiha_res",
                     {"seed": 1, "name": "irra_sgiha_res", "sgiha.filter": "res"}, rows=rows)
    return seeds + [other]


def test_per_run_rows_and_seed_group_mean_std(runs):
    text = summarize_runs.main([str(r) for r in runs])
    per_run = table_rows(text, "2024")  # labels clash ('irra_sgiha' three times): full folder names
    assert [r[0] for r in per_run] == [r.name for r in runs]
    assert [r[1] for r in per_run] == ["1", "2", "3", "1"]
    assert per_run[1][2:8] == ["62.00", "72.00", "77.00", "51.00", "41.00", "test_results.json"]
    assert per_run[3][2:8] == ["45.00", "55.00", "60.00", "30.00", "20.00", "metrics.jsonl epoch 2"]

    (group,) = table_rows(text, "irra_sgiha")  # only the three seeds of one config form a group
    assert group[1:3] == ["1, 2, 3", "3"]
    map_values = [50.0, 51.0, 55.0]
    mean = sum(map_values) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in map_values) / 2)  # sample std, by hand
    assert group[3] == "62.00 ± 2.00"
    assert group[6] == f"{mean:.2f} ± {std:.2f}"


def test_seed_groups_ignore_only_the_seed(runs, tmp_path):
    configs = [run_config(r) for r in runs]
    assert seed_groups(configs) == [[0, 1, 2], [3]]
    renamed = make_run(tmp_path, "20240106_120000_irra_sgiha", {"seed": 4, "name": "irra_sgiha",
                                                                "lr": 2e-5}, scores(1.0))
    assert seed_groups(configs + [run_config(renamed)]) == [[0, 1, 2], [3], [4]]
    assert seed_groups([configs[0], None, None, configs[1]]) == [[0, 3], [1], [2]]  # no config: alone


def test_no_group_table_without_repeated_seeds(runs):
    text = summarize_runs.main([str(runs[0]), str(runs[3]), "--out", str(runs[0].parent / "summary.md")])
    assert "mean ± sample standard deviation" not in text and "±" not in text
    assert (runs[0].parent / "summary.md").read_text() == text


def test_best_epoch_follows_select_on(tmp_path):
    rows = [{"epoch": 1, **scores(30.0), "val": {"R1": 50.0}}, {"epoch": 2, **scores(40.0), "val": {"R1": 20.0}}]
    on_val = make_run(tmp_path, "20240101_000000_v", {"select_on": "val"}, rows=rows)
    on_test = make_run(tmp_path, "20240101_000000_t", {"select_on": "test"}, rows=rows)
    assert read_test_scores(on_val).metrics["R1"] == 30.0 and read_test_scores(on_val).source.endswith("epoch 1")
    assert read_test_scores(on_test).metrics["R1"] == 40.0


def test_labels_and_clear_errors(tmp_path, runs):
    assert run_label(runs[0]) == "irra_sgiha"
    assert unique_labels([runs[0], runs[3]]) == ["irra_sgiha", "irra_sgiha_res"]
    assert unique_labels(runs[:2]) == [runs[0].name, runs[1].name]  # same name: full folder names
    bare = make_run(tmp_path, "20240109_000000_x", {})
    with pytest.raises(RunError, match="no test_results.json and no evaluated test epoch.*test.py"):
        read_test_scores(bare)
    (bare / "test_results.json").write_text('{"R1": 1.0}')
    with pytest.raises(RunError, match=r"test_results.json: missing or non-numeric \['R5'"):
        read_test_scores(bare)
    with pytest.raises(RunError, match="no usable run folder among the 1 given"):
        summarize_runs.main([str(tmp_path / "nope")])


def test_nested_results_and_only_the_runs_own_file(tmp_path):
    run = make_run(tmp_path, "20240101_000000_n", {}, rows=[{"epoch": 1, **scores(30.0)}])
    nested = {"dataset": "CUHK-PEDES", "split": "test", "checkpoint": "best.pth", "epoch": 4,
              "metrics": scores(55.0)}
    (run / "test_results_ICFG-PEDES.json").write_text(json.dumps({**nested, "metrics": scores(11.0)}))
    assert read_test_scores(run).metrics["R1"] == 30.0  # another dataset's file is not this run's score
    (run / "test_results.json").write_text(json.dumps(nested))
    got = read_test_scores(run)
    assert got.metrics == {k: float(v) for k, v in scores(55.0).items()} and got.source == "test_results.json"


def test_incomplete_runs_are_skipped_with_a_warning(runs, tmp_path, caplog):
    not_evaluated = make_run(tmp_path, "20240107_000000_irra_sgiha", {"seed": 9, "name": "irra_sgiha"})
    corrupt = make_run(tmp_path, "20240108_000000_irra_sgiha", {"seed": 8, "name": "irra_sgiha"}, scores(1.0))
    (corrupt / "test_results.json").write_text('{"R1": 50.0, "R5"')  # cut short
    bad_config = make_run(tmp_path, "20240109_000000_irra_sgiha", {"seed": 7}, scores(1.0))
    (bad_config / "configs.yaml").write_bytes(b"seed: \xe9\n")
    lone_file = tmp_path / "notes.txt"
    lone_file.write_text("not a run")
    given = [runs[0], not_evaluated, runs[1], corrupt, lone_file, bad_config, runs[2]]
    with caplog.at_level(logging.WARNING):
        text = summarize_runs.summarize([str(r) for r in given])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    expected = [(not_evaluated, "no test_results.json and no evaluated test epoch"),
                (corrupt, "test_results.json: not valid JSON"), (lone_file, "not a folder"),
                (bad_config, "configs.yaml: not UTF-8 text")]
    assert len(warnings) == len(expected)
    for warning, (folder, reason) in zip(warnings, expected):
        assert warning.startswith(f"skipping {folder}: ") and reason in warning
    assert [r[0] for r in table_rows(text, "2024")] == [r.name for r in runs[:3]]
    (group,) = table_rows(text, "irra_sgiha")  # the three complete seeds still form their group
    assert group[1:4] == ["1, 2, 3", "3", "62.00 ± 2.00"]
