"""Where a model runs and in which precision: the device, the autocast mode of ``amp`` and its context.

Shared by training, evaluation, the Python API and the tools, so that every entry point follows one rule.
Under autocast only the towers run in half precision; the losses are float32 (model/objectives.py).
"""
from __future__ import annotations

import contextlib
import logging
from typing import ContextManager

import torch

from utils.config import ConfigError

logger = logging.getLogger(__name__)

AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
BF16_MIN_CAPABILITY = 8  # CUDA compute capability major: Ampere and later have bf16 tensor cores


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available, else CPU; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device = {name!r} but CUDA is not available here; use --device auto or --device cpu")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` is a GPU with native bf16 (Ampere or later, or ROCm); V100 only emulates it, slowly."""
    if device.type != "cuda":
        return False
    if torch.version.hip:
        return True
    return torch.cuda.get_device_capability(device)[0] >= BF16_MIN_CAPABILITY


def auto_amp(device_type: str, bf16: bool) -> str:
    """The rule of amp 'auto': bf16 on GPUs with native bf16 (``bf16``), fp16 (with a GradScaler) on older GPUs and
    none on CPU (method §7 trains in fp32; AMP is this project's speed option). Also the planner's, for GPUs that
    need not be here."""
    if device_type != "cuda":
        return "none"
    return "bf16" if bf16 else "fp16"


def choose_amp(amp: str, device: torch.device) -> tuple[str, str]:
    """The autocast mode ``amp`` resolves to on ``device`` (``auto_amp``'s rule for 'auto'), and why."""
    if amp != "auto":
        return amp, f"amp: {amp} in the config"
    bf16 = native_bf16(device)
    chosen = auto_amp(device.type, bf16)
    if device.type != "cuda":
        return chosen, f"{device.type} device"
    if bf16:
        return chosen, f"{torch.cuda.get_device_name(device)} has native bf16"
    return chosen, f"{torch.cuda.get_device_name(device)} has no native bf16; fp16 with a GradScaler"


def resolve_amp(amp: str, device: torch.device) -> str:
    """``choose_amp``'s mode; the choice of 'auto' is logged."""
    chosen, why = choose_amp(amp, device)
    if amp == "auto":
        logger.info("amp auto: %s (%s)", chosen, why)
    return chosen


def autocast(device: torch.device, amp: str) -> ContextManager:
    """The autocast context for ``amp`` ('fp16' | 'bf16' | 'none'); a no-op for 'none'."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])
