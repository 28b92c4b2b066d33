"""Evaluate a trained run on its test split: ``python test.py --config_file <run>/configs.yaml [--checkpoint F]``.

Builds the inference-only model (the CLIP backbone: no classifier, MLM or SG-IHA parameters), loads
``<run>/best.pth`` by default, prints R1/R5/R10/mAP/mINP and writes ``<run>/test_results.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Sequence

from datasets.build import build_eval_sets
from processor.amp import autocast, resolve_amp, resolve_device
from processor.evaluator import evaluate, format_table
from utils.cli import run_cli
from utils.config import load_config
from utils.io import atomic_write_text
from utils.logger import setup_logger
from model.api import load_retrieval_model
from utils.runs import default_checkpoint

logger = logging.getLogger("sgiha")


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_file", required=True, help="the run's configs.yaml")
    parser.add_argument("--checkpoint", help="checkpoint to evaluate (default: best.pth beside the config)")
    return parser.parse_known_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Evaluate; returns the test metrics."""
    args, overrides = parse_args(argv)
    run_dir = Path(args.config_file).resolve().parent
    cfg = load_config(args.config_file, overrides)
    setup_logger(run_dir, filename="test.log")
    device = resolve_device(cfg.device)
    amp = resolve_amp(cfg.amp, device)

    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint(args.config_file)
    model = load_retrieval_model(cfg, checkpoint, device)

    eval_sets = build_eval_sets(cfg, splits=("test",))
    results = evaluate(model, eval_sets["test"], device, lambda: autocast(device, amp), cfg.eval_chunk_size,
                       i2t=cfg.eval_i2t)
    logger.info("%s\n%s", cfg.dataset_name, format_table({"test": results}))
    atomic_write_text(run_dir / "test_results.json", json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    run_cli(main)
