"""Checkpoints are written atomically and unreadable files give clear errors."""
from pathlib import Path

import pytest
import torch

from utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch):
    path = tmp_path / "best.pth"
    save_checkpoint({"model": {"w": torch.ones(3)}, "epoch": 1}, path)

    def torn_save(obj, file):  # writes half a file, then the process is interrupted
        Path(file).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn_save)  # what utils.io writes with
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "epoch": 2}, path)
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["best.pth"]  # no temporary file left behind


def test_load_errors_name_the_file(tmp_path: Path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*missing.pth"):
        load_checkpoint(tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth: not a readable PyTorch checkpoint"):
        load_checkpoint(garbage)
    foreign = tmp_path / "weights.pth"
    torch.save({"visual.proj": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="weights.pth: not a training checkpoint"):
        load_checkpoint(foreign)
