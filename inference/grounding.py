"""Phrase-grounding maps of a trained SG-IHA head: where the masked positions of a question look in the image.

A question is a caption with one attribute phrase replaced by ``<|mask|>`` tokens (method §6.1). Each SG-IHA block's
cross-attention (method §6.3.2) gives every question position a distribution over the image's patch tokens; the map
of a tapped layer is that distribution averaged over the heads and over the masked positions, and the combined
map is the mean of the layers' maps. Nothing here changes what training computes: the probabilities come from
``CrossAttention.attention`` on the inputs a forward pre-hook sees.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from datasets.aqa import find_occurrences, question_and_answer
from model.build import TrainingModel, read_checkpoint
from utils.checkpoint import CheckpointError
from utils.config import Config
from utils.errors import one_line
from utils.tokenizer import Tokenizer

SGIHA_PREFIX = "sgiha."  # state-dict entries of the SG-IHA head


@dataclass(frozen=True)
class Question:
    """One masked phrase of one caption of one image; ``part`` names its toy region (None on real data)."""

    image: int  # index into the caller's image list
    caption: str
    phrase: str
    part: str | None = None


def load_grounding_model(cfg: Config, checkpoint: str | os.PathLike, device: torch.device) -> TrainingModel:
    """The training model (backbone and SG-IHA head) of a checkpoint, in eval mode."""
    state = read_checkpoint(checkpoint)["model"]
    if not any(k.startswith(SGIHA_PREFIX) for k in state):
        raise CheckpointError(f"{checkpoint}: has no SG-IHA head (its run was trained without the aqa loss); "
                              f"grounding maps need a run whose loss_names include aqa")
    if "aqa" not in cfg.losses:
        raise CheckpointError(f"{checkpoint}: its config's loss_names {cfg.loss_names} lack aqa")
    num_classes = state["classifier.weight"].shape[0] if "classifier.weight" in state else 1
    model = TrainingModel(cfg, num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{checkpoint}: does not fit this config's model: {one_line(exc)}") from exc
    return model.to(device).eval()


def _question_and_answer(q: Question, tokenizer: Tokenizer, cfg: Config) -> tuple[str, str]:
    """method §6.1's question and answer texts for the question's first phrase occurrence."""
    spans = find_occurrences(q.caption, q.phrase)
    if not spans:
        raise ValueError(f"phrase {q.phrase!r} does not occur in caption {q.caption!r}")
    return question_and_answer(q.caption, spans[0], tokenizer, cfg.sgiha.answer_prefix_masks)


def encode_questions(questions: Sequence[Question], tokenizer: Tokenizer, cfg: Config) -> tuple[Tensor, Tensor]:
    """Question ids [Q, L] and the masked positions [Q, L] (bool) of each question's first phrase occurrence."""
    question_ids = torch.stack([tokenizer(_question_and_answer(q, tokenizer, cfg)[0], cfg.text_length)
                                for q in questions])
    return question_ids, question_ids == tokenizer.mask_id


def encode_answers(questions: Sequence[Question], tokenizer: Tokenizer, cfg: Config) -> Tensor:
    """Answer ids [Q, L] of each question (method §6.1 step 4: the prefix masks, then the phrase)."""
    return torch.stack([tokenizer(_question_and_answer(q, tokenizer, cfg)[1], cfg.text_length) for q in questions])


@torch.no_grad()
def bridge_features(model: TrainingModel, images: Tensor, question_ids: Tensor) -> Tensor:
    """The SG-IHA head's output Z [Q, D] for each question on its image [Q, 3, H, W] (method §6.3).

    The question's own attention mask (method §6.3.4) covers SOT through EOT.
    """
    head = model.sgiha
    image = model.backbone.image_features(images, head.layers)
    text = model.backbone.text_features(question_ids, head.layers)
    eot = question_ids.argmax(dim=-1, keepdim=True)  # the EOT token has the largest id (method §3)
    question_mask = torch.arange(question_ids.shape[1], device=question_ids.device).unsqueeze(0) <= eot
    return head(image.global_feat, image.hidden, text.hidden, question_mask)


@torch.no_grad()
def attention_maps(model: TrainingModel, images: Tensor, question_ids: Tensor, masked: Tensor) -> Tensor:
    """Per tapped layer, the masked positions' mean attention over the patches: [Q, layers, rows, cols].

    ``images`` [Q, 3, H, W] holds each question's image.
    """
    head = model.sgiha
    probs: list[Tensor] = []
    hooks = [block.cross.register_forward_pre_hook(lambda module, args: probs.append(module.attention(*args)))
             for block in head.blocks]
    try:
        bridge_features(model, images, question_ids)
    finally:
        for hook in hooks:
            hook.remove()
    weights = masked.float() / masked.sum(dim=1, keepdim=True).clamp(min=1)  # mean over the masked positions
    per_layer = torch.stack([p.mean(dim=1) for p in probs], dim=1)  # [Q, layers, L, N], mean over heads
    maps = torch.einsum("qkln,ql->qkn", per_layer, weights)
    rows, cols = model.backbone.visual.grid
    return maps.reshape(*maps.shape[:2], rows, cols)


def with_combined(maps: Tensor) -> Tensor:
    """[Q, layers + 1, rows, cols]: the layers' maps, then their mean (the combined map)."""
    return torch.cat([maps, maps.mean(dim=1, keepdim=True)], dim=1)


def _pixel_span(start: int, size: int, scale: float) -> slice:
    """Pixels of the stored image under input pixels [start, start + size) (at least one)."""
    low = int(start * scale)
    return slice(low, max(int((start + size) * scale), low + 1))


def patches_on_part(labels: np.ndarray, part: int, grid: tuple[int, int], patch_size: int, stride: int,
                    input_size: Sequence[int]) -> np.ndarray:
    """[rows * cols] bool: whether each patch's footprint holds a pixel labelled ``part`` in ``labels`` [H, W], an
    image that the evaluation transform resized to ``input_size`` (the tolerance of a patch-level pointer)."""
    scale_y, scale_x = labels.shape[0] / input_size[0], labels.shape[1] / input_size[1]
    on = labels == part
    rows = [_pixel_span(r * stride, patch_size, scale_y) for r in range(grid[0])]
    cols = [_pixel_span(c * stride, patch_size, scale_x) for c in range(grid[1])]
    return np.array([on[r, c].any() for r in rows for c in cols], dtype=bool)


def pointing_hit(attention: np.ndarray, inside: np.ndarray) -> bool:
    """The pointing game: whether the map's peak patch lies inside the region (``inside`` [rows * cols] bool)."""
    return bool(inside[int(np.argmax(attention))])
