"""Load a trained retrieval model (SPEC 6.5: the CLIP backbone alone) for evaluation, search and embedding."""
from __future__ import annotations

import logging
import os

import torch
from torch import nn

from model.build import build_retrieval_model, retrieval_state_dict
from utils.checkpoint import load_checkpoint
from utils.config import Config

logger = logging.getLogger(__name__)


def load_retrieval_model(cfg: Config, checkpoint: str | os.PathLike, device: torch.device) -> nn.Module:
    """The inference model (CLIP backbone only, SPEC 6.5) with a training checkpoint's weights, in eval mode."""
    state = load_checkpoint(checkpoint)
    model = build_retrieval_model(cfg)
    model.load_state_dict(retrieval_state_dict(state["model"]))
    logger.info("loaded %s (epoch %d); inference model: %.2fM parameters", checkpoint, state["epoch"],
                sum(p.numel() for p in model.parameters()) / 1e6)
    return model.to(device).eval()
