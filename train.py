"""Train a text-to-image person retrieval model: ``python train.py --config_file configs/... [--key value ...]``.

Multi-GPU: ``torchrun --nproc_per_node N train.py --config_file ...``. Resume: ``--resume <run>/last.pth``.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import torch
from torch.nn.parallel import DistributedDataParallel

from datasets.build import build_dataloaders
from datasets.toy import make_toy_dataset
from model.build import build_model
from processor.amp import autocast, build_grad_scaler, resolve_amp, resolve_device
from processor.evaluator import chance_rank1
from processor.trainer import TrainState, fit
from solver import build_lr_scheduler, build_optimizer
from utils.checkpoint import load_checkpoint
from utils.cli import run_cli
from utils.config import Config, load_config, save_config
from utils.distributed import cleanup_distributed, init_distributed
from utils.logger import setup_logger
from utils.seed import set_rng_states, set_seed

logger = logging.getLogger("sgiha")


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_file", help="YAML config (default with --resume: the run's configs.yaml)")
    parser.add_argument("--resume", help="checkpoint to continue from (usually <run>/last.pth)")
    args, overrides = parser.parse_known_args(argv)
    if args.config_file is None and args.resume is None:
        parser.error("--config_file is required (or --resume <run>/last.pth)")
    return args, overrides


def make_run_dir(cfg: Config) -> Path:
    """A new folder name: <output_dir>/<dataset_name>/<YYYYmmdd_HHMMSS>_<name>[_N] (N when the second is taken)."""
    base = Path(cfg.output_dir) / cfg.dataset_name / f"{time.strftime('%Y%m%d_%H%M%S')}_{cfg.name}"
    run_dir, n = base, 1
    while run_dir.exists():
        run_dir, n = base.with_name(f"{base.name}_{n}"), n + 1
    return run_dir


def prepare_toy_dataset(cfg: Config) -> None:
    """Generate the toy dataset when the config asks for it and its folder is absent (the CPU demo)."""
    target = Path(cfg.root_dir) / cfg.dataset_name
    if not cfg.toy.generate_if_missing or target.exists():
        return
    toy = {k: v for k, v in cfg.toy.items() if k != "generate_if_missing"}
    logger.info("toy dataset not found at %s: generating it (%s)", target, toy)
    make_toy_dataset(root_dir=cfg.root_dir, dataset_name=cfg.dataset_name, **toy)


def _tensorboard_writer(run_dir: Path, enabled: bool):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.info("tensorboard is not installed: scalars go to metrics.jsonl only")
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def build_training(cfg: Config, resume: str | None, device: torch.device, amp: str, world_size: int,
                   rank: int) -> tuple:
    """Data, model, optimizer, scheduler, grad scaler and the (possibly resumed) train state."""
    if rank == 0:
        prepare_toy_dataset(cfg)
    if world_size > 1:
        torch.distributed.barrier()
    data = build_dataloaders(cfg, world_size=world_size, rank=rank)
    logger.info("batch %d per process, global batch %d", cfg.batch_size, cfg.batch_size * world_size)
    for name, eval_set in data.eval_sets.items():
        logger.info("%s split: %d queries x %d gallery images, chance Rank-1 %.2f%%", name, len(eval_set.q_pids),
                    len(eval_set.g_pids), chance_rank1(eval_set.q_pids, eval_set.g_pids))

    model = build_model(cfg, data.num_classes).to(device)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    scaler = build_grad_scaler(device, amp)
    state = TrainState()
    if resume:
        ckpt = load_checkpoint(resume)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        state = TrainState(ckpt["epoch"], ckpt["best_epoch"], ckpt["best_score"], ckpt["history"])
        set_rng_states(ckpt["rng"])
        logger.info("resumed from %s after epoch %d", resume, state.epoch)
    logger.info("trainable parameters: %.2fM", sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6)
    return data, model, optimizer, scheduler, scaler, state


def main(argv: Sequence[str] | None = None) -> Path:
    """Run training; returns the run folder."""
    args, overrides = parse_args(argv)
    run_dir = Path(args.resume).resolve().parent if args.resume else None
    config_file = args.config_file or str(run_dir / "configs.yaml")
    cfg = load_config(config_file, overrides)

    device = resolve_device(cfg.device)
    world_size, rank, device = init_distributed(device)
    is_main = rank == 0
    if run_dir is None:
        run_dir = make_run_dir(cfg)
        if world_size > 1:  # every rank must agree on the folder (timestamps may differ by a second)
            holder = [str(run_dir)]
            torch.distributed.broadcast_object_list(holder, src=0)
            run_dir = Path(holder[0])
    setup_logger(run_dir, rank)
    amp = resolve_amp(cfg.amp, device)
    logger.info("command: %s", " ".join(sys.argv))
    logger.info("run folder %s, device %s, amp %s, %d process(es)", run_dir, device, amp, world_size)
    if is_main:
        save_config(cfg, run_dir / "configs.yaml")
    set_seed(cfg.seed)

    try:
        data, model, optimizer, scheduler, scaler, state = build_training(cfg, args.resume, device, amp, world_size,
                                                                          rank)
    except Exception:
        if is_main and not args.resume:  # a run that never started leaves no folder behind
            setup_logger(None, rank)
            shutil.rmtree(run_dir, ignore_errors=True)
            with contextlib.suppress(OSError):  # and no empty <dataset_name>/ folder either
                run_dir.parent.rmdir()
        cleanup_distributed()
        raise

    train_model = model
    if world_size > 1:
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)
    writer = _tensorboard_writer(run_dir, cfg.tensorboard and is_main)
    try:
        fit(cfg, run_dir, train_model, data, optimizer, scheduler, scaler, device, lambda: autocast(device, amp),
            state, is_main=is_main, writer=writer)
    finally:
        if writer is not None:
            writer.close()
        cleanup_distributed()
    return run_dir


if __name__ == "__main__":
    run_cli(main)
