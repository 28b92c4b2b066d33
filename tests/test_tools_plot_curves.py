"""tools/plot_curves.py: which panels a set of metrics logs gets, the series read from them, the PNG size."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from tools import plot_curves
from utils.runs import RunError, usable_runs


def write_run(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def sgiha_rows() -> list[dict]:
    rows = []
    for epoch in range(1, 5):
        row = {"epoch": epoch, "lr": 1e-5 * epoch, "sdm_loss": 5.0 / epoch, "id_loss": 3.0 / epoch,
               "aqa_loss": 2.0 / epoch, "loss": 10.0 / epoch, "img_acc": 0.1 * epoch}
        if epoch % 2 == 0:  # evaluated epochs: test flat, val nested
            row.update({"R1": 10.0 * epoch, "R5": 1, "R10": 1, "mAP": 5.0 * epoch, "mINP": 1,
                        "val": {"R1": 9.0 * epoch, "mAP": 4.0 * epoch}})
        rows.append(row)
    return rows


def baseline_rows() -> list[dict]:
    return [{"epoch": e, "lr": 1e-5, "sdm_loss": 4.0, "id_loss": 2.0, "mlm_loss": 7.0, "loss": 13.0,
             "R1": 20.0 + e, "mAP": 15.0} for e in (1, 2, 3)]


def test_panels_cover_every_loss_lr_and_retrieval_metric():
    assert plot_curves.panel_keys([sgiha_rows()]) == ["loss", "sdm_loss", "id_loss", "aqa_loss", "lr", "R1", "mAP"]
    both = plot_curves.panel_keys([sgiha_rows(), baseline_rows()])
    assert both == ["loss", "sdm_loss", "id_loss", "aqa_loss", "mlm_loss", "lr", "R1", "mAP"]
    assert plot_curves.panel_keys([[{"epoch": 1, "lr": 0.1}]]) == ["lr"]


def test_series_reads_test_flat_and_val_nested():
    rows = sgiha_rows()
    assert plot_curves.series(rows, "R1") == ([2, 4], [20.0, 40.0])
    assert plot_curves.series(rows, "R1", "val") == ([2, 4], [18.0, 36.0])
    assert plot_curves.series(rows, "aqa_loss") == ([1, 2, 3, 4], [2.0, 1.0, 2.0 / 3, 0.5])
    assert plot_curves.series(baseline_rows(), "R1", "val") == ([], [])


@pytest.mark.parametrize("runs, panels", [(1, 7), (2, 8)])
def test_png_has_one_400x300_panel_per_key_three_per_row(tmp_path, runs, panels):
    folders = [write_run(tmp_path / "20240101_120000_irra_sgiha", sgiha_rows()),
               write_run(tmp_path / "20240102_090000_irra", baseline_rows())][:runs]
    out = plot_curves.main([str(f) for f in folders] + (["--out", str(tmp_path / "cmp.png")] if runs > 1 else []))
    assert out == (folders[0] / "curves.png" if runs == 1 else tmp_path / "cmp.png")
    rows = -(-panels // 3)
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.size == (3 * 400, rows * 300)


def test_labels_and_errors(tmp_path):
    good = write_run(tmp_path / "20240101_120000_a", baseline_rows())
    with pytest.raises(SystemExit):
        plot_curves.parse_args([str(good), "--labels", "one", "two"])
    bad = tmp_path / "20240101_120000_b"
    bad.mkdir()
    (bad / "metrics.jsonl").write_text('{"epoch": 1, "loss": 2}\nnot json\n')
    with pytest.raises(RunError, match=r"no usable run folder among the 2 given"):
        plot_curves.main([str(bad), str(tmp_path / "nope")])
    with pytest.raises(RunError, match="no usable run folder"):
        plot_curves.main([str(tmp_path)])


def test_incomplete_runs_are_skipped_with_a_warning(tmp_path, caplog):
    good = write_run(tmp_path / "20240101_120000_a", baseline_rows())
    torn = write_run(tmp_path / "20240101_120000_torn", [])
    (torn / "metrics.jsonl").write_text('{"epoch": 1, "loss": 2}\nnot json\n')
    empty = write_run(tmp_path / "20240101_120000_empty", [])
    no_metrics = tmp_path / "20240101_120000_started"
    no_metrics.mkdir()
    (no_metrics / "configs.yaml").write_text("name: started\n")
    binary = write_run(tmp_path / "20240101_120000_binary", [])
    (binary / "metrics.jsonl").write_bytes(b"\xff\xfe\x00\x81")
    folders = [torn, good, tmp_path / "nope", empty, no_metrics, binary]
    with caplog.at_level(logging.WARNING):
        usable = usable_runs(folders, plot_curves.read_curves)
    assert list(usable) == [1] and usable[1] == baseline_rows()
    reasons = {"torn": "line 2 is not valid JSON", "nope": "not a folder", "empty": "no epoch logged yet",
               "started": "metrics.jsonl: not found", "binary": "not UTF-8 text"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(reasons)
    for warning, (folder, reason) in zip(warnings, reasons.items()):
        assert warning.startswith("skipping ") and folder in warning.split(":")[0] and reason in warning


def test_labels_follow_the_runs_left(tmp_path, monkeypatch):
    good = write_run(tmp_path / "20240101_120000_a", baseline_rows())
    other = write_run(tmp_path / "20240101_120000_b", sgiha_rows())
    drawn = {}
    monkeypatch.setattr(plot_curves, "plot_runs", lambda runs, labels, out: drawn.update(labels=labels, out=out))
    plot_curves.main([str(good), str(tmp_path / "nope"), str(other), "--labels", "A", "gone", "B"])
    assert drawn == {"labels": ["A", "B"], "out": Path("curves.png")}  # several runs asked for: the shared name
