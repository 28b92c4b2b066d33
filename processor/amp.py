"""Mixed-precision training helpers: the GradScaler and one backward/step helper (open_clip style).

Master weights stay fp32; only the forward runs under autocast. fp16 needs a GradScaler, bf16 and fp32 do not.
The device and autocast choice live in utils/precision.py (also used outside training).
"""
from __future__ import annotations

import torch


def build_grad_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 (disabled scalers pass losses and steps through)."""
    return torch.amp.GradScaler(device.type, enabled=(amp == "fp16"))


def backward_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
    """Backward, optimizer step (skipped by the scaler on inf/nan gradients under fp16) and zero_grad."""
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
