"""An interrupted run resumed with ``--resume`` ends bit for bit as the uninterrupted one, for every schedule the
configs can express: warm-up from warmup_factor, cosine down to target_lr, step milestones, early stop, and an
extension with --num_epoch or --early_stop_epoch null (in-process: Ctrl-C is a KeyboardInterrupt after N steps).
last.pth holds no scheduler state; an older last.pth that still carries one resumes exactly as well."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import processor.trainer as trainer
import train as train_script
from datasets.toy import make_toy_dataset
from tests.killed_run import signal_after_step
from tests.tiny_run import benchmark_settings, tiny_args
from utils.checkpoint import load_checkpoint, previous_path, save_checkpoint

TRAIN_IDS = 8
STEPS = TRAIN_IDS * 2 * 2 // 16  # steps per epoch: 2 images x 2 captions per identity at batch 16
EPOCHS = 3
# method §7's warm-up from 0.1 x lr (epochs 1-2), then the cosine to a non-zero target (epoch 3).
LR = 2e-3  # the schedules below are stated at this base lr, whatever the demo uses
WARM_COSINE = (*benchmark_settings(), "--lr", str(LR), "--warmup_epochs", "2", "--warmup_factor", "0.1",
               "--target_lr", "1e-4")
# warm-up in epoch 1, then lr x gamma from epoch 2 (milestone k = 1).
WARM_STEP = ("--lr", str(LR), "--warmup_epochs", "1", "--warmup_factor", "0.1", "--lrscheduler", "step",
             "--milestones", "[1]", "--gamma", "0.5")


def _args(toy: Path, out: Path, *extra: str) -> list[str]:
    return tiny_args(toy, out, "--batch_size", "16", "--num_epoch", str(EPOCHS), "--eval_period", "100",
                     "--eval_splits", "[test]", *extra)


def _ctrl_c() -> None:
    raise KeyboardInterrupt  # what Python's SIGINT handler raises, without a signal


def _interrupted(monkeypatch, args: list[str], steps: int) -> Path:
    """Run until Ctrl-C arrives after ``steps`` training steps; returns the run folder."""
    with monkeypatch.context() as patch:
        patch.setattr(trainer, "backward_step", trainer.backward_step)  # put back on leaving
        signal_after_step(steps, _ctrl_c)
        with pytest.raises(KeyboardInterrupt, match="resume with"):
            train_script.main(args)
    (run,) = list(Path(args[args.index("--output_dir") + 1]).glob("*/*"))
    return run


def _training_rows(run: Path) -> list[tuple]:
    """(epoch, lr, losses) of every metrics.jsonl row: what the schedule and the steps gave."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["epoch"], r["lr"], r["loss"]) for r in rows]


def _assert_same(checkpoint: Path, reference: Path) -> None:
    a, b = load_checkpoint(checkpoint), load_checkpoint(reference)
    assert a["epoch"] == b["epoch"]
    for key, value in b["model"].items():
        assert torch.equal(a["model"][key], value), key  # bit for bit
    for group_a, group_b in zip(a["optimizer"]["param_groups"], b["optimizer"]["param_groups"]):
        assert group_a["lr"] == group_b["lr"] and group_a["weight_decay"] == group_b["weight_decay"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume_toy")
    make_toy_dataset(root_dir=root, dataset_name="CUHK-PEDES", num_train_ids=TRAIN_IDS, num_val_ids=2,
                     num_test_ids=3, images_per_id=2, image_size=[64, 32], seed=1)
    return root


@pytest.fixture(scope="module")
def warm_cosine(toy: Path, tmp_path_factory) -> Path:
    """The uninterrupted warm-up + cosine run."""
    return train_script.main(_args(toy, tmp_path_factory.mktemp("warm_cosine"), *WARM_COSINE))


@pytest.mark.parametrize("steps", [STEPS + 1, 2 * STEPS + 1], ids=["in-warm-up", "in-cosine"])
def test_ctrl_c_and_resume_equal_the_uninterrupted_warm_up_and_cosine(toy, warm_cosine, monkeypatch, tmp_path,
                                                                       steps):
    run = _interrupted(monkeypatch, _args(toy, tmp_path, *WARM_COSINE), steps)
    assert "scheduler" not in load_checkpoint(run / "last.pth")  # an epoch's lr follows from config and epoch
    train_script.main(["--resume", str(run / "last.pth")])
    _assert_same(run / "last.pth", warm_cosine / "last.pth")
    assert _training_rows(run) == _training_rows(warm_cosine)
    lrs = [lr for _, lr, _ in _training_rows(run)]
    assert lrs[:2] == pytest.approx([LR * 0.1, LR * (0.1 * 0.5 + 0.5)])  # method §7's warm-up


def test_step_milestones_resume_exactly(toy, monkeypatch, tmp_path):
    whole = train_script.main(_args(toy, tmp_path / "whole", *WARM_STEP, "--num_epoch", "2"))
    run = _interrupted(monkeypatch, _args(toy, tmp_path / "cut", *WARM_STEP, "--num_epoch", "2"), STEPS + 1)
    train_script.main(["--resume", str(run / "last.pth")])
    _assert_same(run / "last.pth", whole / "last.pth")
    assert [lr for _, lr, _ in _training_rows(run)] == pytest.approx([LR * 0.1, LR * 0.5])


def test_early_stop_then_extension_equal_the_whole_run(toy, warm_cosine, monkeypatch, tmp_path):
    run = _interrupted(monkeypatch, _args(toy, tmp_path, *WARM_COSINE, "--early_stop_epoch", "2"), STEPS + 1)
    train_script.main(["--resume", str(run / "last.pth")])
    _assert_same(run / "last.pth", previous_path(warm_cosine / "last.pth"))  # the whole run's epoch 2
    train_script.main(["--resume", str(run / "last.pth"), "--early_stop_epoch", "null"])
    _assert_same(run / "last.pth", warm_cosine / "last.pth")
    assert _training_rows(run) == _training_rows(warm_cosine)


def test_extending_num_epoch_equals_the_longer_run(toy, warm_cosine, tmp_path):
    short = train_script.main(_args(toy, tmp_path, *WARM_COSINE, "--num_epoch", "2"))  # the warm-up only
    train_script.main(["--resume", str(short / "last.pth"), "--num_epoch", str(EPOCHS)])
    _assert_same(short / "last.pth", warm_cosine / "last.pth")
    assert _training_rows(short) == _training_rows(warm_cosine)


def _stale_scheduler_state() -> dict:
    """A scheduler entry as earlier versions saved it in last.pth, with a learning rate and an epoch that fit no
    epoch of the run: were it read, the resumed schedule would differ."""
    optimizer = torch.optim.SGD([torch.zeros(1)], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    optimizer.step()
    scheduler.step()
    return scheduler.state_dict()


def test_an_older_last_pth_with_scheduler_state_resumes_exactly(toy, warm_cosine, monkeypatch, tmp_path):
    run = _interrupted(monkeypatch, _args(toy, tmp_path, *WARM_COSINE), 2 * STEPS + 1)
    old_style = {**load_checkpoint(run / "last.pth"), "scheduler": _stale_scheduler_state()}
    save_checkpoint(old_style, run / "last.pth")
    start = (run / "run_info.json").read_bytes()
    train_script.main(["--resume", str(run / "last.pth")])
    _assert_same(run / "last.pth", warm_cosine / "last.pth")
    assert _training_rows(run) == _training_rows(warm_cosine)
    assert (run / "run_info.json").read_bytes() == start  # the run's start stays on record
    assert json.loads((run / "run_info_resumed_after_epoch2.json").read_text())["seed"] == 42
