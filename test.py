"""Evaluate a retrieval model on a dataset split: ``python test.py --config_file <run> [--checkpoint F]``.

- A trained run (its folder, or its configs.yaml): loads ``<run>/best.pth`` (or ``--checkpoint``: a file name
  alone, ``--checkpoint last.pth``, names a file of the run folder; a path with a folder, ``./x.pth``, is read as
  given) and writes ``<run>/test_results.json``. An evaluation other than the run's own (another dataset or
  root_dir, another checkpoint, the val split) goes to its own file,
  ``test_results_<dataset>_<checkpoint>[_<split>].json``, and never replaces the run's result.
- Zero-shot: ``--checkpoint pretrained`` evaluates the config's pretrained CLIP weights (``pretrain_choice`` /
  ``pretrain_path``) without training, e.g. with ``configs/CUHK-PEDES/irra_sgiha.yaml``; results go to
  ``--out_dir`` (default: a new folder ``<output_dir>/<dataset_name>/<stamp>_<name>_zero_shot``).

Results files hold the dataset, split, checkpoint and its epoch next to R1/R5/R10/mAP/mINP. The model is the
inference model (the CLIP backbone: no classifier, MLM or SG-IHA parameters). Under torchrun each process encodes
its share of the split.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from utils.cli import parse_first, run_cli
from utils.runs import (
    BEST_CHECKPOINT,
    CHECKPOINT_RULE,
    CONFIG_FILE,
    RUN_MARKERS,
    TEST_RESULTS_FILE,
    checkpoint_arg,
    config_file_arg,
    new_run_dir,
    run_config,
    run_dir_of,
)

PRETRAINED = "pretrained"  # --checkpoint value for the zero-shot model
OWN_SPLIT = "test"


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_file", required=True, help="a run folder or its configs.yaml (or any config "
                                                             "with --checkpoint)")
    parser.add_argument("--checkpoint", help=f"checkpoint to evaluate (default: the run's {BEST_CHECKPOINT}; "
                                             f"{CHECKPOINT_RULE}), or '{PRETRAINED}' for the config's pretrained "
                                             f"CLIP weights")
    parser.add_argument("--split", default=OWN_SPLIT, choices=("test", "val"), help="split to evaluate")
    parser.add_argument("--out_dir", help="folder for test.log and the results file (default: the run folder; "
                                          "for a config that is not a run's, a new folder under output_dir)")
    return parser.parse_known_args(argv)


parse_first(parse_args, __name__)  # --help and argument mistakes answer here, before torch loads

from torch import nn  # noqa: E402

from datasets.build import build_eval_sets  # noqa: E402
from model.build import load_pretrained_model, read_checkpoint, retrieval_model  # noqa: E402
from model.pretrained import pretrained_record  # noqa: E402
from processor.evaluator import evaluate, format_table  # noqa: E402
from processor.pretrain_build import unbuilt_error  # noqa: E402
from utils.config import Config, ConfigError, absolute_paths, load_config, save_config  # noqa: E402
from utils.distributed import cleanup_distributed, init_distributed  # noqa: E402
from utils.io import atomic_write_text, check_output_folder  # noqa: E402
from utils.logger import attach_log_file, setup_logger  # noqa: E402
from utils.precision import resolve_amp, resolve_device  # noqa: E402
from utils.run_info import RUN_INFO_STEM, collect_run_info, file_record, write_diff  # noqa: E402

logger = logging.getLogger("sgiha")

ZERO_SHOT_SUFFIX = "_zero_shot"


@dataclass(frozen=True)
class Target:
    """What is evaluated and where the results go."""

    run_cfg: Config | None  # the run's own config (None: a config that is not a run's)
    run_dir: Path | None
    checkpoint: str  # an absolute path, or PRETRAINED
    out_dir: Path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-")


def results_file(target: Target, cfg: Config, split: str) -> str:
    """test_results.json for the run's own evaluation, else a name saying what was evaluated."""
    run_cfg = target.run_cfg
    if run_cfg is None:  # a folder of its own holds only this evaluation
        return TEST_RESULTS_FILE
    own = (split == OWN_SPLIT and target.checkpoint == str(target.run_dir / BEST_CHECKPOINT)
           and target.out_dir == target.run_dir
           and all(cfg[k] == run_cfg[k] for k in ("dataset_name", "root_dir", "annotation_file")))
    if own:
        return TEST_RESULTS_FILE
    parts = [cfg.dataset_name, Path(target.checkpoint).stem] + ([] if split == OWN_SPLIT else [split])
    return f"{Path(TEST_RESULTS_FILE).stem}_{'_'.join(_slug(p) for p in parts)}.json"


def load_model(cfg: Config, checkpoint: str, device) -> tuple[nn.Module, int | None]:
    """The model to evaluate and the epoch it was trained for (None for the pretrained weights)."""
    if checkpoint == PRETRAINED:
        return load_pretrained_model(cfg, device), None
    state = read_checkpoint(checkpoint)
    return retrieval_model(cfg, state["model"], device, checkpoint), state["epoch"]


def resolve_target(args: argparse.Namespace, config_file: Path, cfg: Config) -> Target:
    """What to evaluate and where to write, or a ConfigError saying what to pass."""
    config_file = config_file.absolute()
    run_dir = run_dir_of(config_file)
    checkpoint = args.checkpoint
    if checkpoint is not None and checkpoint != PRETRAINED:
        checkpoint = str(checkpoint_arg(checkpoint, run_dir))
    out_dir = Path(args.out_dir).absolute() if args.out_dir else None
    if out_dir is not None:
        check_output_folder(out_dir, f"--out_dir {args.out_dir}")
    if run_dir is not None:
        return Target(absolute_paths(run_config(run_dir)), run_dir, checkpoint or str(run_dir / BEST_CHECKPOINT),
                      out_dir or run_dir)
    if checkpoint is None:
        raise ConfigError(f"--config_file {config_file} is not a run's {CONFIG_FILE} (no {' / '.join(RUN_MARKERS)} "
                          f"beside it): evaluate a trained run with --config_file <run folder>, this "
                          f"config's pretrained weights with --checkpoint {PRETRAINED}, or a checkpoint with "
                          f"--checkpoint FILE")
    return Target(None, None, checkpoint, out_dir or new_run_dir(cfg, ZERO_SHOT_SUFFIX))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Evaluate; returns what was written to the results file."""
    args, overrides = parse_args(argv)
    config_file = config_file_arg(args.config_file)
    cfg = absolute_paths(load_config(config_file, overrides))
    target = resolve_target(args, config_file, cfg)
    unbuilt = unbuilt_error(config_file, overrides) if target.checkpoint == PRETRAINED else None
    if unbuilt is not None:
        raise unbuilt
    device = resolve_device(cfg.device)
    world_size, rank, device = init_distributed(device)
    try:
        setup_logger(None, rank, buffer=True)
        amp = resolve_amp(cfg.amp, device)  # after the logger: 'auto' logs its choice
        eval_sets = build_eval_sets(cfg, splits=(args.split,), world_size=world_size, rank=rank)
        model, epoch = load_model(cfg, target.checkpoint, device)
        metrics = evaluate(model, eval_sets[args.split], device, amp, cfg.eval_chunk_size, i2t=cfg.eval_i2t, rank=rank)
    finally:
        cleanup_distributed()
    if rank != 0:
        return {}
    attach_log_file(target.out_dir, "test.log")  # the output folder is made only now that evaluation worked
    if target.run_cfg is None:
        save_config(cfg, target.out_dir / CONFIG_FILE)
    checkpoint = target.checkpoint
    result = {"dataset": cfg.dataset_name, "root_dir": cfg.root_dir, "split": args.split,
              "checkpoint": checkpoint if checkpoint != PRETRAINED else f"{PRETRAINED}: "
              f"{cfg.pretrain_path or cfg.pretrain_choice}", "epoch": epoch, "metrics": metrics}
    path = target.out_dir / results_file(target, cfg, args.split)
    weights = ({"pretrained": pretrained_record(cfg.pretrain_choice, cfg.pretrain_path)} if checkpoint == PRETRAINED
               else {"checkpoint": file_record(checkpoint, "")})
    result["run_info"], diff = collect_run_info(cfg, device, world_size, eval_sets[args.split].source.to_dict(),
                                                weights, diff_file=f"{path.stem}_{RUN_INFO_STEM}.diff")
    write_diff(target.out_dir, result["run_info"], diff)
    logger.info("%s %s, %s\n%s", cfg.dataset_name, args.split, result["checkpoint"],
                format_table({args.split: metrics}))
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    logger.info("wrote %s", path)
    return result


if __name__ == "__main__":
    run_cli(main)
