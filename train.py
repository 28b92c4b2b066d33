"""Train a text-to-image person retrieval model: ``python train.py --config_file configs/... [--key value ...]``.

Multi-GPU: ``torchrun --nproc_per_node N train.py --config_file ...`` trains the same global batch (``batch_size``)
as one process. Resume: ``--resume <run>/last.pth``. Every check (config, data, weights, checkpoint) runs before
the run folder is made or changed.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from utils.cli import parse_first, run_cli
from utils.runs import BEST_CHECKPOINT, CONFIG_FILE, LAST_CHECKPOINT, check_output_dir, claim_run_dir


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_file", help="YAML config (default with --resume: the run's configs.yaml)")
    parser.add_argument("--resume", help="checkpoint to continue from (usually <run>/last.pth)")
    args, overrides = parser.parse_known_args(argv)
    if args.config_file is None and args.resume is None:
        parser.error("--config_file is required (or --resume <run>/last.pth)")
    if args.config_file is not None and Path(args.config_file).is_dir():  # continue the run, or copy its settings?
        folder = Path(args.config_file)
        parser.error(f"--config_file {folder} is a folder: continue that run with --resume {folder / LAST_CHECKPOINT}, "
                     f"or train anew with its settings: --config_file {folder / CONFIG_FILE}")
    return args, overrides


parse_first(parse_args, __name__)  # --help and argument mistakes answer here, before torch loads

import torch  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from datasets.build import build_dataloaders  # noqa: E402
from model.build import build_model  # noqa: E402
from model.pretrained import check_file, pretrained_record  # noqa: E402
from processor.amp import build_grad_scaler  # noqa: E402
from processor.plan import memory_warning  # noqa: E402
from processor.pretrain_build import unbuilt_error  # noqa: E402
from processor.trainer import TrainState, check_compile, compile_training_model, fit, last_epoch  # noqa: E402
from solver import build_lr_scheduler, build_optimizer  # noqa: E402
from solver.build import continue_schedule, scheduled_lrs  # noqa: E402
from utils.checkpoint import RESUME_KEYS, CheckpointError, UnsafeCheckpointError, load_checkpoint, previous_path  # noqa: E402
from utils.config import Config, absolute_paths, load_config, save_config  # noqa: E402
from utils.config_rules import per_process  # noqa: E402
from utils.distributed import cleanup_distributed, env_world_size, init_distributed  # noqa: E402
from utils.errors import UserError, one_line  # noqa: E402
from utils.io import remove_stale_temporaries  # noqa: E402
from utils.logger import attach_log_file, log_to_file, setup_logger  # noqa: E402
from utils.metrics import chance_rank1  # noqa: E402
from utils.precision import resolve_amp, resolve_device  # noqa: E402
from utils.run_info import record_run  # noqa: E402
from utils.seed import set_rng_states, set_seed  # noqa: E402

logger = logging.getLogger("sgiha")


def _tensorboard_writer(run_dir: Path, enabled: bool):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.info("tensorboard is not installed: scalars go to metrics.jsonl only")
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def read_resume_checkpoint(path: Path) -> dict[str, Any]:
    """last.pth of a run, with advice when it is missing, damaged or not a resumable checkpoint."""
    previous = previous_path(path)
    fallback = (f"; the previous epoch's copy is {previous}: --resume {previous}" if previous.is_file() else "")
    if not path.is_file():
        raise CheckpointError(f"--resume {path}: the checkpoint is missing{fallback}")
    try:
        ckpt = load_checkpoint(path)
    except UnsafeCheckpointError:
        raise  # refused, not damaged: its copies are no fallback
    except CheckpointError as exc:
        raise CheckpointError(f"--resume: {exc}{fallback}; or evaluate {path.parent / BEST_CHECKPOINT} with test.py"
                              ) from exc
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"--resume {path}: it holds no training state ({', '.join(missing)}): best.pth keeps "
                              f"only what evaluation needs; resume from {path.parent / LAST_CHECKPOINT}")
    return ckpt


def config_changes(saved: dict, cfg: Config, prefix: str = "") -> list[str]:
    """'key: old -> new' for every value ``cfg`` changes against a checkpoint's saved config."""
    changes = []
    for key, value in cfg.items():
        old = saved.get(key) if isinstance(saved, dict) else None
        if isinstance(value, dict):
            changes += config_changes(old or {}, value, f"{prefix}{key}.")
        elif old != value:
            changes.append(f"{prefix}{key}: {old!r} -> {value!r}")
    return changes


def restore(ckpt: dict[str, Any], path: Path, cfg: Config, model, optimizer, scheduler, scaler) -> TrainState:
    """Load a resumed run's states, or raise a CheckpointError naming what the config changed; touches no file."""
    changes = config_changes(ckpt.get("config", {}), cfg)
    configured = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"--resume {path}: the checkpoint does not fit the model of this config"
                              f"{' (changed: ' + '; '.join(changes) + ')' if changes else ''}: {one_line(exc)}"
                              ) from exc
    for group, settings in zip(optimizer.param_groups, configured):
        group.update(settings)  # this config's weight decay, betas, ...: the checkpoint gives the moments only
    if ckpt["scaler"] or not scaler.is_enabled():
        scaler.load_state_dict(ckpt["scaler"])
    else:  # saved without a GradScaler (amp none or bf16): fp16 starts with a fresh scale
        logger.info("the checkpoint has no fp16 grad-scaler state: starting a fresh one")
    set_rng_states(ckpt["rng"])
    state = TrainState(ckpt["epoch"], ckpt["best_epoch"], ckpt["best_score"], ckpt["history"])
    end = last_epoch(cfg)
    if state.epoch >= end:
        raise CheckpointError(f"--resume {path}: the run already finished epoch {state.epoch} and this config stops "
                              f"after epoch {end}; to extend it add --num_epoch N (N > {state.epoch}) and, if set, "
                              f"--early_stop_epoch null")
    if changes:
        logger.info("resuming with changed settings: %s", "; ".join(changes))
    continue_schedule(scheduler, state.epoch)  # this config's schedule, also when num_epoch changed
    lrs = scheduled_lrs(scheduler, range(state.epoch + 1, end + 1))
    logger.info("resumed from %s after epoch %d; the schedule continues at lr %s for epochs %d..%d",
                path, state.epoch, " -> ".join(f"{row[0]:.3g}" for row in lrs), state.epoch + 1, end)
    return state


def build_training(cfg: Config, resume: Path | None, ckpt: dict[str, Any] | None, device: torch.device, amp: str,
                   world_size: int, rank: int) -> tuple:
    """Data, model, optimizer, scheduler, grad scaler and the (possibly resumed) train state."""
    data = build_dataloaders(cfg, world_size=world_size, rank=rank)
    logger.info("global batch %d: %d per process x %d process(es); %d steps per epoch", cfg.batch_size,
                cfg.batch_size // world_size, world_size, len(data.train_loader))
    for name, eval_set in data.eval_sets.items():
        logger.info("%s split: %d queries x %d gallery images, chance Rank-1 %.2f%%", name, len(eval_set.q_pids),
                    len(eval_set.g_pids), chance_rank1(eval_set.q_pids, eval_set.g_pids))

    if device.type == "cuda" and rank == 0:
        warning = memory_warning(cfg, data.num_classes, amp, world_size, torch.cuda.mem_get_info(device)[0])
        if warning:
            logger.warning(warning)
    model = build_model(cfg, data.num_classes, world_size, rank).to(device)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    scaler = build_grad_scaler(device, amp)
    state = TrainState()
    if ckpt is not None:
        state = restore(ckpt, resume, cfg, model, optimizer, scheduler, scaler)
    logger.info("trainable parameters: %.2fM", sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6)
    return data, model, optimizer, scheduler, scaler, state


def open_run_dir(cfg: Config, resume: Path | None, world_size: int, rank: int) -> Path:
    """The run folder: a new one (made by process 0, every process agrees on its name) or the resumed run's."""
    if resume:
        return resume.parent
    holder = [str(claim_run_dir(cfg)) if rank == 0 else ""]
    if world_size > 1:  # timestamps may differ by a second between processes
        torch.distributed.broadcast_object_list(holder, src=0)
    return Path(holder[0])


def main(argv: Sequence[str] | None = None) -> Path:
    """Run training; returns the run folder."""
    args, overrides = parse_args(argv)
    resume = Path(args.resume).absolute() if args.resume else None
    ckpt = read_resume_checkpoint(resume) if resume else None
    config_file = args.config_file or str(resume.parent / CONFIG_FILE)
    cfg = absolute_paths(load_config(config_file, overrides))
    if resume is None:
        check_output_dir(cfg)  # before any work: no run folder could be made under a file
    world_size = env_world_size()
    if cfg.pretrain_choice != "none" and cfg.pretrain_path:  # before any work
        unbuilt = None if Path(cfg.pretrain_path).is_file() else unbuilt_error(config_file, overrides)
        if unbuilt is not None:  # a demo config's backbone: train.py reads weights, the demo builds them
            raise unbuilt
        check_file(cfg.pretrain_path)
    per_process(cfg.batch_size, world_size, "batch_size")
    per_process(cfg.test_batch_size, world_size, "test_batch_size")
    device = resolve_device(cfg.device)
    check_compile(cfg.compile, device)  # before any work
    world_size, rank, device = init_distributed(device)
    setup_logger(None, rank, buffer=True)
    logger.info("command: %s", " ".join(sys.argv))
    amp = resolve_amp(cfg.amp, device)  # after the logger: 'auto' logs its choice
    set_seed(cfg.seed)
    try:
        data, model, optimizer, scheduler, scaler, state = build_training(cfg, resume, ckpt, device, amp,
                                                                          world_size, rank)
        run_dir = open_run_dir(cfg, resume, world_size, rank)
    except BaseException:
        cleanup_distributed()
        raise
    if rank == 0:  # every check passed: only now is the run folder made or changed
        attach_log_file(run_dir)
        save_config(cfg, run_dir / CONFIG_FILE)
        for stale in remove_stale_temporaries(run_dir):
            logger.info("removed %s, left by a write that was killed half-way", stale.name)
        record_run(run_dir, cfg, device, world_size, data.source.to_dict(),  # what made this run: run_info.json
                   {"pretrained": pretrained_record(cfg.pretrain_choice, cfg.pretrain_path)},
                   resumed_after=state.epoch if resume else None)
    logger.info("run folder %s, device %s, amp %s, %d process(es)", run_dir, device, amp, world_size)

    train_model = model
    if world_size > 1:
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    train_model = compile_training_model(train_model, cfg, device, world_size)
    writer = _tensorboard_writer(run_dir, cfg.tensorboard and rank == 0)
    try:
        fit(cfg, run_dir, train_model, data, optimizer, scheduler, scaler, device, amp, state, rank=rank, writer=writer)
    except KeyboardInterrupt:
        last = run_dir / LAST_CHECKPOINT
        advice = (f"resume with: python train.py --resume {last}" if last.is_file()
                  else f"no epoch had finished, nothing to resume (run folder {run_dir})")
        log_to_file(f"interrupted; {advice}")
        raise KeyboardInterrupt(f"interrupted; {advice}") from None
    except UserError as exc:
        log_to_file(one_line(exc))
        raise
    finally:
        if writer is not None:
            writer.close()
        cleanup_distributed()
    return run_dir


if __name__ == "__main__":
    run_cli(main)
