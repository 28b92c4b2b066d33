"""End to end on CPU: train.py and test.py on a tiny toy dataset, resume, AMP, and the loop's error handling."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import train as train_script
from datasets.bases import DatasetError
from model.build import MLM_OVERFLOW, build_retrieval_model
from processor.trainer import MLMOverflowError, NonFiniteLossError, train_one_epoch
from tests.tiny_run import DEMO, load_test_script, tiny_args
from utils.checkpoint import load_checkpoint
from utils.config import CONFIG_DIR, ConfigError
from utils.precision import autocast

test_script = load_test_script()


@pytest.fixture(scope="module")
def toy_root(tiny_toy: Path) -> Path:
    return tiny_toy


@pytest.mark.parametrize("losses", ["sdm+id", "sdm+id+mlm", "sdm+id+aqa", "sdm+id+mlm+aqa"])
def test_train_then_test_each_recipe(toy_root: Path, tmp_path: Path, losses: str):
    run_dir = train_script.main(tiny_args(toy_root, tmp_path, "--loss_names", losses))
    assert run_dir.parent == tmp_path / "CUHK-PEDES" and run_dir.name.endswith("_demo_irra_sgiha")
    for name in ("configs.yaml", "train.log", "metrics.jsonl", "best.pth", "last.pth"):
        assert (run_dir / name).is_file(), name
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for name in losses.split("+"):
        assert all(f"{name}_loss" in r for r in rows)
    assert all({"R1", "R5", "R10", "mAP", "mINP", "lr"} <= set(r) and "R1" in r["val"] for r in rows)
    best = max(rows, key=lambda r: (r["R1"], -r["epoch"]))
    assert load_checkpoint(run_dir / "best.pth")["epoch"] == best["epoch"]

    results = test_script.main(["--config_file", str(run_dir / "configs.yaml")])
    saved = json.loads((run_dir / "test_results.json").read_text())
    assert saved["metrics"] == pytest.approx(results["metrics"])
    assert results["metrics"]["R1"] == pytest.approx(best["R1"], abs=1e-6)  # test.py reproduces the training score
    log = (run_dir / "train.log").read_text()
    assert "chance Rank-1" in log
    best_val = max(rows, key=lambda r: (r["val"]["R1"], -r["epoch"]))
    summary = log[log.index("finished: run folder"):].splitlines()
    assert summary == [
        f"finished: run folder {run_dir}",
        f"  best-val epoch {best_val['epoch']} (chosen without test labels), its test scores: "
        + "  ".join(f"{k} {best_val[k]:.2f}" for k in ("R1", "R5", "R10", "mAP", "mINP")),
        f"  best-test epoch {best['epoch']} (the published protocol: chosen on test), its test scores: "
        + "  ".join(f"{k} {best[k]:.2f}" for k in ("R1", "R5", "R10", "mAP", "mINP")),
        f"  files: best.pth = epoch {best['epoch']} (best test Rank-1), last.pth = epoch {rows[-1]['epoch']} (the "
        f"last, resumable), metrics.jsonl = every epoch's losses and scores"]


def test_inference_model_has_backbone_parameters_only(tiny_run: Path):
    run_dir = tiny_run
    ckpt = load_checkpoint(run_dir / "last.pth")
    backbone = {k: v for k, v in ckpt["model"].items() if k.startswith("backbone.")}
    assert len(backbone) < len(ckpt["model"])  # the training model has heads
    from utils.config import load_config
    model = build_retrieval_model(load_config(run_dir / "configs.yaml"))
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in backbone.values())


@pytest.mark.slow  # its fast twin: test_resume.py::test_early_stop_then_extension_equal_the_whole_run
def test_resume_matches_uninterrupted_run(toy_root: Path, tmp_path: Path):
    full = train_script.main(tiny_args(toy_root, tmp_path / "full"))
    first = train_script.main(tiny_args(toy_root, tmp_path / "split", "--num_epoch", "2", "--early_stop_epoch", "1"))
    resumed = train_script.main(["--resume", str(first / "last.pth"), "--early_stop_epoch", "null"])
    assert resumed == first
    a = load_checkpoint(full / "last.pth")
    b = load_checkpoint(resumed / "last.pth")
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    rows = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_bf16_autocast_training_keeps_fp32_weights(toy_root: Path, tmp_path: Path):
    run_dir = train_script.main(tiny_args(toy_root, tmp_path, "--num_epoch", "1", "--amp", "bf16",
                                          "--eval_splits", "[test]"))
    ckpt = load_checkpoint(run_dir / "last.pth")
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values() if v.is_floating_point())
    row = json.loads((run_dir / "metrics.jsonl").read_text())
    assert torch.isfinite(torch.tensor(row["loss"]))


def test_missing_dataset_is_an_error_not_toy_data(tmp_path: Path):
    args = tiny_args(tmp_path / "nothing_here", tmp_path / "out")
    with pytest.raises(DatasetError) as info:
        train_script.main(args)
    assert str(info.value).startswith(f"{tmp_path / 'nothing_here' / 'CUHK-PEDES'}: dataset folder not found")
    assert not (tmp_path / "nothing_here").exists()
    assert not any((tmp_path / "out").rglob("*.yaml"))  # the run that never started left no folder


@pytest.mark.slow
def test_cli_reports_user_errors_in_one_line(tmp_path: Path):
    result = subprocess.run([sys.executable, str(CONFIG_DIR.parent / "train.py"), "--config_file", DEMO,
                             "--root_dir", str(tmp_path / "missing"),
                             "--output_dir", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert "dataset folder not found" in result.stderr


def test_bad_override_stops_before_training(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown key 'sgiha.fliter'"):
        train_script.main(["--config_file", DEMO, "--output_dir", str(tmp_path), "--sgiha.fliter", "res"])
    assert not any(tmp_path.iterdir())


class _FailsAt(nn.Module):
    """A model with one weight that counts its calls and goes wrong from (``_NanAfter``) or at (``_OverflowAt``)
    ``bad_step``."""

    def __init__(self, bad_step: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.calls = 0
        self.bad_step = bad_step


class _NanAfter(_FailsAt):
    """Returns a finite loss, then nan from the given step on."""

    def forward(self, batch):
        self.calls += 1
        value = self.weight.sum() * (float("nan") if self.calls >= self.bad_step else 1.0)
        return {"sdm_loss": value}


class _OverflowAt(_FailsAt):
    """A finite loss; the fixed-shape MLM overflow flag raised at one step."""

    def forward(self, batch):
        self.calls += 1
        return {"sdm_loss": self.weight.sum(), MLM_OVERFLOW: torch.tensor(float(self.calls == self.bad_step))}


def _epoch(model, steps: int, log_period: int, sync_every_step: bool):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return train_one_epoch(model, [{"x": torch.zeros(1)}] * steps, optimizer, scaler, torch.device("cpu"),
                           lambda: autocast(torch.device("cpu"), "none"), epoch=7, log_period=log_period,
                           show_progress=False, sync_every_step=sync_every_step)


def test_without_per_step_sync_a_non_finite_loss_stops_at_the_end_of_its_log_period():
    """fixed_shapes: values are read once per log period, so the nan of step 3 is found at step 4 and named by
    the steps it lies between (the run stops before any checkpoint)."""
    model = _NanAfter(bad_step=3)
    with pytest.raises(NonFiniteLossError, match="epoch 7, between steps 1 and 4"):
        _epoch(model, steps=10, log_period=4, sync_every_step=False)
    assert model.calls == 4


def test_without_per_step_sync_the_epoch_means_are_the_per_step_ones():
    model = _NanAfter(bad_step=100)
    deferred = _epoch(model, steps=7, log_period=3, sync_every_step=False)  # periods of 3, 3 and 1 steps
    model = _NanAfter(bad_step=100)
    assert deferred == pytest.approx(_epoch(model, steps=7, log_period=3, sync_every_step=True))


def test_an_mlm_overflow_stops_training_with_its_steps():
    with pytest.raises(MLMOverflowError, match="epoch 7, between steps 5 and 8: .*mlm.fixed_sigmas"):
        _epoch(_OverflowAt(bad_step=6), steps=10, log_period=4, sync_every_step=False)
    assert "mlm_overflow" not in _epoch(_OverflowAt(bad_step=100), steps=3, log_period=4, sync_every_step=False)


def test_non_finite_loss_is_reported_with_its_step():
    model = _NanAfter(bad_step=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loader = [{"x": torch.zeros(1)}] * 5
    with pytest.raises(NonFiniteLossError, match="epoch 7, step 3"):
        train_one_epoch(model, loader, optimizer, scaler, torch.device("cpu"),
                        lambda: autocast(torch.device("cpu"), "none"), epoch=7, log_period=10, show_progress=False)
