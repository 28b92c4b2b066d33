"""Optimizer with method §7's per-parameter learning-rate groups, and the per-epoch learning-rate schedule."""
from __future__ import annotations

import logging
import math
from bisect import bisect_right
from typing import Callable, Iterable

import torch
from torch import nn

from utils.config import CHOICES

logger = logging.getLogger(__name__)

# Module-name prefixes of the training model (matched by prefix, never by substring).
IRRA_BRANCH = ("cross_attn.", "cross_modal_transformer.")  # method §7: lr x lr_factor (its LayerNorms keep base lr)
HEADS = ("classifier.", "mlm_head.")                        # method §7: ID classifier and MLM head, lr x lr_factor
SGIHA = ("sgiha.",)                                         # method §7: every SG-IHA parameter, lr x lr_factor



def param_lr_and_decay(cfg, name: str) -> tuple[float, float]:
    """method §7's rules in order for one parameter name; a later rule overrides an earlier one's lr."""
    lr, weight_decay = cfg.lr, cfg.weight_decay
    if name.startswith(IRRA_BRANCH):
        lr = cfg.lr * cfg.lr_factor
    if name.endswith("bias"):
        lr = cfg.lr * cfg.bias_lr_factor
        weight_decay = cfg.weight_decay_bias  # kept even when a later rule resets the lr
    if name.startswith(HEADS):
        lr = cfg.lr * cfg.lr_factor
    if name.startswith(SGIHA):
        lr = cfg.lr * cfg.lr_factor
    return lr, weight_decay


def build_param_groups(cfg, model: nn.Module) -> list[dict]:
    """Trainable parameters grouped by equal (lr, weight_decay), each group with a readable 'name'."""
    groups: dict[tuple[float, float], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr, weight_decay = param_lr_and_decay(cfg, name)
        group = groups.setdefault((lr, weight_decay), {"params": [], "lr": lr, "weight_decay": weight_decay,
                                                        "modules": []})
        group["params"].append(param)
        top = name.split(".", 1)[0]
        if top not in group["modules"]:
            group["modules"].append(top)
    if not groups:
        raise ValueError(f"build_optimizer: {type(model).__name__} has no parameter with requires_grad")
    result = []
    for (lr, weight_decay), group in groups.items():
        modules = group.pop("modules")
        group["name"] = f"lr x{lr / cfg.lr:g}, weight decay {weight_decay:g}: {', '.join(modules)}"
        result.append(group)
    return result


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """cfg.optimizer (Adam | AdamW | SGD) over method §7's parameter groups."""
    groups = build_param_groups(cfg, model)
    if cfg.optimizer in ("Adam", "AdamW"):
        cls = torch.optim.Adam if cfg.optimizer == "Adam" else torch.optim.AdamW
        return cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.adam_eps, fused=cfg.fused_optimizer)
    if cfg.optimizer == "SGD":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    raise ValueError(f"optimizer = {cfg.optimizer!r} is not valid; choose one of {list(CHOICES['optimizer'])}")


def warmup_factor(cfg, k: int) -> float:
    """method §7: linear warm-up from cfg.warmup_factor to 1 over cfg.warmup_epochs (k = epoch - 1); 1 after."""
    if k >= cfg.warmup_epochs:
        return 1.0
    alpha = k / cfg.warmup_epochs
    return cfg.warmup_factor * (1 - alpha) + alpha


def lr_factor_at(cfg, k: int, base_lr: float) -> float:
    """Multiplier of a group's initial lr ``base_lr`` for the epoch with index k = epoch - 1 (method §7)."""
    if cfg.lrscheduler == "step":
        return warmup_factor(cfg, k) * cfg.gamma ** bisect_right(cfg.milestones, k)
    if k < cfg.warmup_epochs:
        return warmup_factor(cfg, k)
    # method §7: cosine from the group's lr to cfg.target_lr over the epochs after warm-up.
    progress = (k - cfg.warmup_epochs) / max(1, cfg.num_epoch - cfg.warmup_epochs)
    target = cfg.target_lr / base_lr if base_lr else 0.0  # a group at lr 0 stays at 0 whatever the factor
    return target + (1 - target) * 0.5 * (1 + math.cos(math.pi * progress))


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule (method §7): call ``step()`` once after each epoch; epoch e trains at factor(e - 1).

    A schedule no longer than its warm-up is the warm-up alone (as the release: a one-epoch smoke run works).
    """
    if cfg.lrscheduler == "cosine" and cfg.num_epoch <= cfg.warmup_epochs:
        logger.info("num_epoch %d <= warmup_epochs %d: the schedule is the linear warm-up only (no cosine part)",
                    cfg.num_epoch, cfg.warmup_epochs)

    def group_lambda(base_lr: float) -> Callable[[int], float]:
        return lambda k: lr_factor_at(cfg, k, base_lr)

    # The optimizer is build_optimizer's: each group's lr is the configured one (method §7), the schedule's base.
    lambdas = [group_lambda(group["lr"]) for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


def continue_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, finished: int) -> None:
    """Set ``scheduler`` and its optimizer to train epoch ``finished + 1`` next (a resumed run).

    An epoch's learning rates are a function of (config, epoch) alone: the scheduler's base lrs, which
    build_lr_scheduler took from build_optimizer's groups, times the epoch's factors. Nothing is read back from
    a checkpoint's optimizer or scheduler state, whose lrs may be a warm-up's or another config's.
    """
    scheduler.last_epoch = finished
    (lrs,) = scheduled_lrs(scheduler, [finished + 1])
    for group, base, lr in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, lrs):
        group["initial_lr"], group["lr"] = base, lr


def scheduled_lrs(scheduler: torch.optim.lr_scheduler.LambdaLR, epochs: Iterable[int]) -> list[list[float]]:
    """Each group's learning rate in each of ``epochs`` (counted from 1), as ``step()`` sets it."""
    return [[base * factor(epoch - 1) for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
            for epoch in epochs]
