"""Print parameter counts of the training model's parts and of the retrieval model.

    python tools/count_params.py [--config configs/x.yaml] [--num_classes 11003] [--key value ...]

Models are built on the meta device: shapes only, no memory, no weights loaded.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from prettytable import PrettyTable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from utils.cli import parse_first, run_cli  # noqa: E402

CUHK_TRAIN_IDS = 11003  # method §2: CUHK-PEDES training identities (the ID classifier's classes)


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="YAML config (default: configs/base.yaml)")
    parser.add_argument("--num_classes", type=int, default=CUHK_TRAIN_IDS, help="ID classifier classes")
    return parser.parse_known_args(argv)


parse_first(parse_args, __name__)  # --help and argument mistakes answer here, before torch loads

import torch  # noqa: E402

from model.build import TrainingModel, build_retrieval_model  # noqa: E402
from utils.config import load_config  # noqa: E402

IRRA_MODULES = ("cross_attn", "cross_modal_transformer", "ln_pre_t", "ln_pre_i", "ln_post", "mlm_head")


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_rows(cfg, num_classes: int) -> list[tuple[str, int]]:
    """(part, parameters) for every part of the training model of ``cfg`` and for the retrieval model."""
    with torch.device("meta"):
        model = TrainingModel(cfg, num_classes)
        retrieval = build_retrieval_model(cfg)
    rows = [("backbone (CLIP)", count(model.backbone))]
    if "id" in model.losses:
        rows.append(("ID classifier", count(model.classifier)))
    if "mlm" in model.losses:
        rows += [(f"IRRA {name}", count(getattr(model, name))) for name in IRRA_MODULES]
        rows.append(("IRRA branch total", sum(count(getattr(model, name)) for name in IRRA_MODULES)))
    if "aqa" in model.losses:
        for layer, block in zip(model.sgiha.layers, model.sgiha.blocks):
            rows.append((f"SG-IHA block (hidden state {layer})", count(block)))
        rows.append(("SG-IHA final norm + projection", count(model.sgiha.norm) + count(model.sgiha.proj)))
        rows.append(("SG-IHA total", count(model.sgiha)))
    rows.append(("training model total", count(model)))
    rows.append(("retrieval model (evaluation, method §6.5)", count(retrieval)))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    args, overrides = parse_args(argv)
    cfg = load_config(args.config, overrides)
    table = PrettyTable(["part", "parameters"], align="r")
    table.align["part"] = "l"
    for name, value in parameter_rows(cfg, args.num_classes):
        table.add_row([name, f"{value:,}"])
    print(f"loss_names={cfg.loss_names} img_size={cfg.img_size} stride={cfg.stride_size}")
    print(table)


if __name__ == "__main__":
    run_cli(main)
