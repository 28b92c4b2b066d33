"""Device and mixed-precision helpers: one autocast context and one backward/step helper (open_clip style).

Master weights stay fp32; only the forward runs under autocast. fp16 needs a GradScaler, bf16 and fp32 do not.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from utils.config import ConfigError

_AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available, else CPU; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device = {name!r} but CUDA is not available here; use --device auto or --device cpu")
    return device


def resolve_amp(amp: str, device: torch.device) -> str:
    """'auto' is fp16 on CUDA and none on CPU (SPEC 7 trains in fp32; AMP is this project's speed option)."""
    if amp == "auto":
        return "fp16" if device.type == "cuda" else "none"
    return amp


def autocast(device: torch.device, amp: str) -> ContextManager:
    """The autocast context for ``amp`` ('fp16' | 'bf16' | 'none'); a no-op for 'none'."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AMP_DTYPES[amp])


def build_grad_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 (disabled scalers pass losses and steps through)."""
    return torch.amp.GradScaler(device.type, enabled=(amp == "fp16"))


def backward_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
    """Backward, optimizer step (skipped by the scaler on inf/nan gradients under fp16) and zero_grad."""
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
