"""Optimizer and learning-rate schedule (method §7)."""
from solver.build import build_lr_scheduler, build_optimizer

__all__ = ["build_lr_scheduler", "build_optimizer"]
