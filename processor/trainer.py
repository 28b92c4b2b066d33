"""The training loop: one epoch of steps, evaluation, checkpoints and the metrics log of a run."""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch
from torch import nn
from tqdm import tqdm

from model.build import MLM_OVERFLOW, unwrap
from processor.amp import backward_step
from processor.evaluator import evaluate, format_table
from utils.checkpoint import save_checkpoint
from utils.config import Config, ConfigError
from utils.distributed import average_over_ranks
from utils.errors import UserError
from utils.io import atomic_write_text
from utils.precision import autocast
from utils.runs import BEST_CHECKPOINT, LAST_CHECKPOINT, METRIC_KEYS, METRICS_FILE
from utils.seed import get_rng_states

logger = logging.getLogger(__name__)

TOTAL_LOSS = "loss"  # the sum of the weighted losses, logged next to each


class NonFiniteLossError(UserError, RuntimeError):
    """A loss became inf or nan: training stops instead of silently continuing on garbage."""


class MLMOverflowError(UserError, RuntimeError):
    """fixed_shapes: a batch had more MLM-masked positions than the MLM head's fixed rows (mlm.fixed_sigmas)."""


@dataclass
class TrainState:
    """What a resumed run needs besides the model, optimizer and grad-scaler states."""
    epoch: int = 0                      # last finished epoch
    best_epoch: int = 0                 # epoch of best.pth
    best_score: float = -1.0            # Rank-1 of cfg.select_on at best_epoch
    history: list[dict[str, Any]] = field(default_factory=list)   # the rows of metrics.jsonl


def check_compile(mode: bool | str, device: torch.device) -> None:
    """compile: reduce-overhead records CUDA graphs: a clear error elsewhere."""
    if mode == "reduce-overhead" and device.type != "cuda":
        raise ConfigError(f"compile = 'reduce-overhead' records CUDA graphs, but the device is {device.type}; use "
                          f"compile: true (or false) there")


def compile_training_model(model: nn.Module, cfg: Config, device: torch.device, world_size: int = 1) -> nn.Module:
    """``model`` (forward and losses) compiled as ``cfg.compile`` says: true: inductor; reduce-overhead: inductor
    with CUDA graphs, which replay a step's kernels with one launch. With fixed_shapes in one process the whole
    forward is one graph (fullgraph=True: a graph break is an error, not a silent split) compiled once; several
    processes read every process's row count each step (model/shard.py), where dynamo splits the graph. Without
    fixed_shapes, the first new text length and the first smaller last batch recompile once each, after which
    torch.compile treats both as dynamic."""
    if not cfg.compile:
        return model
    check_compile(cfg.compile, device)
    mode = "reduce-overhead" if cfg.compile == "reduce-overhead" else None
    whole = cfg.fixed_shapes and world_size == 1
    logger.info("compile: %s: the first step compiles the training model (forward and losses%s)", cfg.compile,
                ", one graph" if whole else "; new shapes or the process gather split or recompile it")
    return torch.compile(model, mode=mode, fullgraph=whole)


def _step_values(outputs: dict[str, torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
    """The step's loss, weighted losses and accuracies as one device vector (``[TOTAL_LOSS, *outputs]``)."""
    return torch.stack([loss.detach().float(), *(v.detach().float() for v in outputs.values())])


def _check_finite(stats: dict[str, float], epoch: int, steps: str) -> None:
    """Stop on an inf or nan loss (``stats``: sums or means over ``steps``, a step or a range of them)."""
    if not math.isfinite(stats[TOTAL_LOSS]):
        parts = {k: v for k, v in stats.items() if k.endswith("_loss")}
        raise NonFiniteLossError(f"non-finite loss at epoch {epoch}, {steps}: {parts}; lower lr, or use amp "
                                 f"bf16 / none instead of fp16, and resume from the last checkpoint")


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    device: torch.device, autocast_ctx: Callable[[], ContextManager], epoch: int,
                    log_period: int, show_progress: bool = True, sync_every_step: bool = True) -> dict[str, float]:
    """Train for one pass over ``loader``; returns the epoch means of every loss and accuracy.

    Each process's values are its share of the global batch's (model/shard.py), so their average over processes
    (one collective) is the single-process value of the global batch. A non-finite loss on any process stops
    every process at the same point. ``sync_every_step``: read the values every step, and stop at the step of a
    non-finite loss; false (fixed_shapes): keep their sums on the device and read them once per ``log_period``
    and at the epoch's end, so the host never waits for the device inside a step; a non-finite loss (or an MLM
    overflow) then stops training at the end of its log period, naming the steps it lies between; no checkpoint
    is written in between.
    """
    model.train()
    sums: dict[str, float] = {}
    device_sums: torch.Tensor | None = None  # sums of the steps since the last read, on the device
    steps = synced = 0
    bar = tqdm(loader, desc=f"epoch {epoch}", dynamic_ncols=True, leave=False, disable=not show_progress)
    for step, batch in enumerate(bar, start=1):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast_ctx():
            outputs = model(batch)
        overflow = outputs.pop(MLM_OVERFLOW, None)
        loss = sum(v for k, v in outputs.items() if k.endswith("_loss"))
        keys = [TOTAL_LOSS, *outputs, *([MLM_OVERFLOW] if overflow is not None else [])]
        values = _step_values(outputs if overflow is None else {**outputs, MLM_OVERFLOW: overflow}, loss)
        device_sums = values if device_sums is None else device_sums + values
        steps += 1
        if sync_every_step or step % log_period == 0 or step == len(loader):
            period = dict(zip(keys, average_over_ranks(device_sums).tolist()))
            device_sums = None
            where = f"step {step}" if steps - synced == 1 else f"between steps {synced + 1} and {step}"
            _check_finite(period, epoch, where)
            if period.pop(MLM_OVERFLOW, 0.0) > 0:
                raise MLMOverflowError(f"epoch {epoch}, {where}: a batch had more MLM-masked positions than the "
                                       f"fixed-shape MLM head takes; raise mlm.fixed_sigmas (or set fixed_shapes: "
                                       f"false) and resume from the last checkpoint")
            for key, value in period.items():
                sums[key] = sums.get(key, 0.0) + value
            synced = steps
            bar.set_postfix({k.replace("_loss", ""): f"{v / steps:.3f}" for k, v in sums.items()
                             if k.endswith("loss")})
        backward_step(loss, optimizer, scaler)
        if step % log_period == 0:
            logger.info("epoch %d step %d/%d %s", epoch, step, len(loader),
                        " ".join(f"{k}={v / steps:.4f}" for k, v in sorted(sums.items())))
    if steps == 0:
        raise RuntimeError("the training loader yielded no batch")
    return {k: v / steps for k, v in sums.items()}


def _metrics_row(epoch: int, lr: float, train_stats: dict[str, float],
                 results: dict[str, dict[str, float]]) -> dict[str, Any]:
    """One metrics.jsonl line: test scores flat (R1..mINP), other splits nested under their name."""
    row: dict[str, Any] = {"epoch": epoch, "lr": lr, **{k: round(v, 6) for k, v in train_stats.items()}}
    for split, metrics in results.items():
        if split == "test":
            row.update(metrics)
        else:
            row[split] = metrics
    return row


def resume_state(model: nn.Module, optimizer, scaler, state: TrainState, cfg: Config) -> dict:
    """last.pth: everything a resumed run needs. No scheduler state: an epoch's learning rates are a function of
    (config, epoch) alone (solver.build.continue_schedule)."""
    return {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": state.epoch,
        "best_epoch": state.best_epoch,
        "best_score": state.best_score,
        "history": state.history,
        "rng": get_rng_states(),
        "config": cfg.to_dict(),
    }


def best_state(checkpoint: dict, results: dict[str, dict[str, float]], select_on: str) -> dict:
    """best.pth: what evaluation and search need (weights, config, epoch, scores), without optimizer state."""
    return {"model": checkpoint["model"], "config": checkpoint["config"], "epoch": checkpoint["epoch"],
            "select_on": select_on, "scores": results}


def _scores_at(history: list[dict[str, Any]], epoch: int) -> dict[str, float]:
    row = next(r for r in history if r["epoch"] == epoch)
    return {k: row[k] for k in METRIC_KEYS if k in row}


def _best_epoch(history: list[dict[str, Any]], split: str) -> int | None:
    """The epoch with the highest Rank-1 on ``split`` (earliest on ties); None when it was never evaluated."""
    scored = [((r if split == "test" else r.get(split, {})).get("R1"), -r["epoch"]) for r in history]
    scored = [s for s in scored if s[0] is not None]
    return -max(scored)[1] if scored else None


def summarize(cfg: Config, state: TrainState, run_dir: Path) -> str:
    """The run's last lines: its folder, the test scores at the best-val epoch (a selection without test labels:
    the honest number) and at the best-test epoch (the published protocol), and which file holds which epoch."""
    lines = [f"finished: run folder {run_dir}"]
    val_epoch = _best_epoch(state.history, "val") if "val" in cfg.eval_splits else None
    test_epoch = _best_epoch(state.history, "test")
    for epoch, label in ((val_epoch, "best-val epoch {} (chosen without test labels)"),
                         (test_epoch, "best-test epoch {} (the published protocol: chosen on test)")):
        scores = _scores_at(state.history, epoch) if epoch is not None else {}
        if scores:
            lines.append(f"  {label.format(epoch)}, its test scores: "
                         + "  ".join(f"{k} {v:.2f}" for k, v in scores.items()))
    best = (f"{BEST_CHECKPOINT} = epoch {state.best_epoch} (best {cfg.select_on} Rank-1)" if state.best_epoch
            else f"no {BEST_CHECKPOINT} ({cfg.select_on} was never evaluated)")
    lines.append(f"  files: {best}, {LAST_CHECKPOINT} = epoch {state.epoch} (the last, resumable), {METRICS_FILE} = "
                 f"every epoch's losses and scores")
    return "\n".join(lines)


def last_epoch(cfg: Config) -> int:
    """The epoch training stops after: num_epoch, or early_stop_epoch when earlier (method §7)."""
    return cfg.num_epoch if cfg.early_stop_epoch is None else min(cfg.num_epoch, cfg.early_stop_epoch)


def fit(cfg: Config, run_dir: Path, model: nn.Module, data, optimizer: torch.optim.Optimizer, scheduler,
        scaler: torch.amp.GradScaler, device: torch.device, amp: str, state: TrainState, rank: int = 0,
        writer=None) -> TrainState:
    """Train from ``state.epoch + 1`` to the last epoch; every process evaluates its share, process 0 writes.

    ``amp``: the resolved autocast mode of the training forward and of evaluation (utils/precision.py).
    """
    is_main = rank == 0
    end = last_epoch(cfg)
    retrieval = unwrap(model).backbone
    for epoch in range(state.epoch + 1, end + 1):
        data.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        start = time.time()
        stats = train_one_epoch(model, data.train_loader, optimizer, scaler, device, lambda: autocast(device, amp),
                                epoch, cfg.log_period, show_progress=is_main, sync_every_step=not cfg.fixed_shapes)
        scheduler.step()
        logger.info("epoch %d done in %.1fs, lr %.3g: %s", epoch, time.time() - start, lr,
                    " ".join(f"{k}={v:.4f}" for k, v in sorted(stats.items())))
        results: dict[str, dict[str, float]] = {}
        if epoch % cfg.eval_period == 0 or epoch == end:
            for split in cfg.eval_splits:
                metrics = evaluate(retrieval, data.eval_sets[split], device, amp, cfg.eval_chunk_size,
                                   i2t=cfg.eval_i2t, rank=rank)
                if metrics is not None:
                    results[split] = metrics
            if results:
                logger.info("epoch %d evaluation\n%s", epoch, format_table(results))
        state.epoch = epoch
        if not is_main:
            continue
        state.history.append(_metrics_row(epoch, lr, stats, results))
        if writer is not None:
            for key, value in stats.items():
                writer.add_scalar(f"train/{key}", value, epoch)
            writer.add_scalar("train/lr", lr, epoch)
            for split, metrics in results.items():
                for key, value in metrics.items():
                    writer.add_scalar(f"{split}/{key}", value, epoch)
        atomic_write_text(run_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in state.history))
        selected = results.get(cfg.select_on)
        improved = selected is not None and selected["R1"] > state.best_score
        if improved:
            state.best_score, state.best_epoch = selected["R1"], epoch
        checkpoint = resume_state(model, optimizer, scaler, state, cfg)
        if improved:
            save_checkpoint(best_state(checkpoint, results, cfg.select_on), run_dir / BEST_CHECKPOINT)
            logger.info("new best %s Rank-1 %.2f at epoch %d: saved best.pth", cfg.select_on, state.best_score, epoch)
        save_checkpoint(checkpoint, run_dir / LAST_CHECKPOINT, keep_previous=cfg.keep_previous_checkpoint)
    if is_main:
        logger.info("%s", summarize(cfg, state, run_dir))
    return state
