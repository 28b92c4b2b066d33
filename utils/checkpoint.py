"""Checkpoints: atomic save, and a loader that says clearly what is wrong with a file.

A run writes ``last.pth`` (everything a resume needs) after every epoch, keeping the one it replaces as
``last_prev.pth`` when asked, and ``best.pth`` (what evaluation and search need: weights, config, epoch,
scores; no optimizer state) when the selected score improves.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from utils.errors import UserError
from utils.io import atomic_torch_save

CHECKPOINT_KEYS = ("model", "epoch")
RESUME_KEYS = ("optimizer", "scheduler", "scaler", "rng", "history")  # what last.pth holds beyond best.pth's
PREVIOUS_SUFFIX = "_prev"  # last.pth -> last_prev.pth


class CheckpointError(UserError, ValueError):
    """A checkpoint file that is missing, unreadable, or not one this project wrote."""


def previous_path(path: str | os.PathLike) -> Path:
    """Where the checkpoint replaced by ``path``'s latest save is kept: last.pth -> last_prev.pth."""
    path = Path(path)
    return path.with_name(f"{path.stem}{PREVIOUS_SUFFIX}{path.suffix}")


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike, keep_previous: bool = False) -> None:
    """Write ``state`` to ``path`` atomically: an interrupted save leaves the previous file intact.

    ``keep_previous``: the file replaced is kept as ``previous_path(path)`` (the previous epoch's copy).
    """
    atomic_torch_save(state, path, previous_path(path) if keep_previous else None)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by ``save_checkpoint`` (a dict with at least 'model' and 'epoch')."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt "
                              f"({type(exc).__name__}: {exc})") from exc
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint of this project (missing {missing}); "
                              "for OpenAI CLIP weights use pretrain_path instead")
    return state
