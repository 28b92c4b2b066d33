"""Checkpoints: atomic save, and a loader that says clearly what is wrong with a file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from utils.errors import UserError
from utils.io import atomic_torch_save

CHECKPOINT_KEYS = ("model", "epoch")


class CheckpointError(UserError, ValueError):
    """A checkpoint file that is missing, unreadable, or not one this project wrote."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically: an interrupted save leaves the previous file intact."""
    atomic_torch_save(state, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by ``save_checkpoint`` (a dict with at least 'model' and 'epoch')."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({exc})") from exc
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint of this project (missing {missing}); "
                         "for OpenAI CLIP weights use pretrain_path instead")
    return state
