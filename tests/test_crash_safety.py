"""A run stopped at any moment (SIGKILL: no cleanup; SIGINT: Ctrl-C) and resumed ends exactly as an uninterrupted one,
under a schedule with a warm-up from warmup_factor (every benchmark config has one) and a cosine to target_lr."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.tiny_run import benchmark_settings, make_tiny_toy, tiny_args, with_ctrl_c
from utils.checkpoint import load_checkpoint
from utils.config import CONFIG_DIR

pytestmark = pytest.mark.slow  # processes started per test (see pytest.ini)

ROOT = CONFIG_DIR.parent
STEPS_PER_EPOCH = 16 * 2 * 2 // 16  # make_tiny_toy's 64 captions at batch 16
EPOCHS = 3
# Epochs 1-2 warm up from 0.1 x lr, epoch 3 is the cosine's first: a resume in either continues the schedule.
SCHEDULE = (*benchmark_settings(), "--num_epoch", str(EPOCHS), "--batch_size", "16", "--warmup_epochs", "2",
            "--warmup_factor", "0.1", "--target_lr", "1e-4")
INTERRUPTED = 130  # utils.cli's status after Ctrl-C


def _train(args: list[str], cwd: Path, moment: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "tests" / "killed_run.py"), moment] if moment else \
        [sys.executable, str(ROOT / "train.py")]
    return subprocess.run(command + args, capture_output=True, text=True, cwd=cwd, preexec_fn=with_ctrl_c)


def _only_run(out: Path) -> Path:
    (run,) = list((out / "CUHK-PEDES").iterdir())
    return run


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """The toy data and an uninterrupted run."""
    tmp = tmp_path_factory.mktemp("crash")
    toy = make_tiny_toy(tmp / "toy")
    result = _train(tiny_args(toy, tmp / "whole", *SCHEDULE), tmp)
    assert result.returncode == 0, result.stderr[-2000:]
    return toy, _only_run(tmp / "whole")


@pytest.mark.parametrize("moment", [
    f"step:{STEPS_PER_EPOCH + 2}",  # SIGKILL mid-epoch 2 (in the warm-up)
    "save:last.pth:2",  # SIGKILL while the epoch-2 last.pth is being written
    f"save:last.pth:{EPOCHS}",  # SIGKILL while the last epoch's last.pth is being written
    pytest.param(f"sigint:{STEPS_PER_EPOCH + 1}", marks=pytest.mark.slow),  # Ctrl-C early in epoch 2
])
def test_killed_and_resumed_run_equals_the_uninterrupted_one(reference, tmp_path: Path, moment: str):
    toy, whole = reference
    killed = _train(tiny_args(toy, tmp_path / "out", *SCHEDULE), tmp_path, moment)
    expected = INTERRUPTED if moment.startswith("sigint") else -9  # -9: SIGKILL
    assert killed.returncode == expected, killed.stderr[-2000:]
    run = _only_run(tmp_path / "out")
    assert load_checkpoint(run / "last.pth")["epoch"] < EPOCHS  # the torn write left the previous epoch's file
    resumed = _train(["--resume", str(run / "last.pth")], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = load_checkpoint(run / "last.pth"), load_checkpoint(whole / "last.pth")
    assert a["epoch"] == b["epoch"] == EPOCHS
    for key, value in b["model"].items():
        assert torch.equal(a["model"][key], value), key  # bit for bit
    assert (run / "metrics.jsonl").read_text() == (whole / "metrics.jsonl").read_text()
    assert load_checkpoint(run / "best.pth")["epoch"] == load_checkpoint(whole / "best.pth")["epoch"]


def test_children_see_ctrl_c_when_the_suite_ignores_it():
    """The SIGINT cases hold however the suite was started: `pytest &` without job control ignores SIGINT."""
    probe = [sys.executable, "-c",
             "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        inherited = subprocess.run(probe, capture_output=True, text=True)
        restored = subprocess.run(probe, capture_output=True, text=True, preexec_fn=with_ctrl_c)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert inherited.stdout.strip() == "False"  # what the failing runs saw: Ctrl-C ignored, the run went on
    assert restored.stdout.strip() == "True"
