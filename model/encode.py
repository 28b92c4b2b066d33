"""The one way retrieval features are computed: used by the evaluator, the Python API and tools/search.py.

One precision rule: the forward runs under the autocast of ``amp``, the config's ``amp`` resolved for the device
by utils.precision.resolve_amp unless the caller asks for another mode, and features come back L2-normalised in
float32.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from utils.precision import autocast

Encode = Callable[[Tensor], Tensor]  # a retrieval model's encode_image or encode_text


@torch.no_grad()
def encode_batch(encode: Encode, inputs: Tensor, device: torch.device, amp: str) -> Tensor:
    """L2-normalised float32 features [N, D] of one batch of images or token ids, on ``device``."""
    with autocast(device, amp):
        out = encode(inputs.to(device, non_blocking=True))
    return F.normalize(out.float(), dim=-1)


@torch.no_grad()
def encode_loader(encode: Encode, loader: Iterable[tuple[Tensor, Tensor]], device: torch.device, amp: str,
                  desc: str, show_progress: bool = True) -> tuple[Tensor, Tensor]:
    """``encode_batch`` over a loader of (keys, inputs); returns (features, keys), both on ``device``.

    An empty loader (a process whose share of a small split is empty) gives [0, 0] features and no keys.
    """
    feats, keys = [], []
    for batch_keys, inputs in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=not show_progress):
        feats.append(encode_batch(encode, inputs, device, amp))
        keys.append(batch_keys.to(device))
    if not feats:
        return torch.zeros(0, 0, device=device), torch.zeros(0, dtype=torch.long, device=device)
    return torch.cat(feats), torch.cat(keys)
