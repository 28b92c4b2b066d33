"""Feature spread of a training run: how alike the global features of different samples are, step by step.

    python bench/feature_spread.py [--config_file configs/demo.yaml] [--steps 40] [--every 10] [--key value ...]

Trains ``--steps`` steps of the config at its base learning rate (no schedule: the early dynamics are the
question) and, every ``--every`` steps and before the first, prints the mean losses of the steps since the last
line and, for one fixed batch encoded anew, the mean and std
of the cosine between the global features of two different images, of two different captions, and the gap
between matching and non-matching image-caption cosines. A mean near 1 is a collapsed tower (every input gives
the same feature): no loss that reads the features (SDM, ID, AQA) can learn until it spreads again.
docs/experiments/demo.md reports what it measured on the demo.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # project imports when run as bench/...py

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

from datasets.build import build_dataloaders  # noqa: E402
from model.build import build_model  # noqa: E402
from processor.amp import backward_step  # noqa: E402
from solver.build import build_optimizer  # noqa: E402
from utils.config import CONFIG_DIR, load_config  # noqa: E402
from utils.seed import set_seed  # noqa: E402


class Spread(NamedTuple):
    """Cosine statistics of one batch's global features."""

    image_mean: float
    image_std: float
    text_mean: float
    text_std: float
    match_gap: float  # mean cosine of matching image-caption pairs minus that of non-matching ones


def off_diagonal_cosines(features: Tensor) -> Tensor:
    """Cosines between every two different rows of ``features`` [N, D] (N * (N - 1) values)."""
    unit = F.normalize(features.double(), dim=-1)
    cos = unit @ unit.T
    return cos[~torch.eye(len(cos), dtype=torch.bool)]


def spread(image: Tensor, text: Tensor) -> Spread:
    """Spread of image features [N, D] and caption features [N, D], row i of each from the same sample."""
    images, texts = off_diagonal_cosines(image), off_diagonal_cosines(text)
    cross = F.normalize(image.double(), dim=-1) @ F.normalize(text.double(), dim=-1).T
    diagonal = torch.eye(len(cross), dtype=torch.bool)
    return Spread(float(images.mean()), float(images.std()), float(texts.mean()), float(texts.std()),
                  float(cross[diagonal].mean() - cross[~diagonal].mean()))


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config_file", default=str(CONFIG_DIR / "demo.yaml"))
    parser.add_argument("--steps", type=int, default=40, help="training steps")
    parser.add_argument("--every", type=int, default=10, help="steps between two measurements")
    return parser.parse_known_args(argv)


def main(argv: Sequence[str] | None = None) -> list[tuple[int, dict[str, float], Spread]]:
    """(step, mean losses of the steps since the previous measurement, spread) per measurement; also printed."""
    args, overrides = parse_args(argv)
    cfg = load_config(args.config_file, overrides)
    set_seed(cfg.seed)
    data = build_dataloaders(cfg)
    model = build_model(cfg, data.num_classes).train()
    optimizer = build_optimizer(cfg, model)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    batches = iter(data.train_loader)
    probe = next(batches)
    rows = []

    def measure(step: int, losses: dict[str, float]) -> None:
        with torch.no_grad():
            row = spread(model.backbone.encode_image(probe["images"]), model.backbone.encode_text(probe["caption_ids"]))
        rows.append((step, losses, row))
        print(f"step {step:4d} " + " ".join(f"{k}={v:.3f}" for k, v in losses.items())
              + f" | image cos {row.image_mean:.4f}±{row.image_std:.4f} caption cos {row.text_mean:.4f}"
              f"±{row.text_std:.4f} match gap {row.match_gap:+.4f}", flush=True)

    measure(0, {})
    totals: dict[str, float] = {}  # loss sums since the last measurement
    for step in range(1, args.steps + 1):
        batch = next(batches, None)
        if batch is None:
            batches = iter(data.train_loader)
            batch = next(batches)
        out = model(batch)
        losses = {k: v for k, v in out.items() if k.endswith("_loss")}
        backward_step(sum(losses.values()), optimizer, scaler)
        for key, value in losses.items():
            totals[key.removesuffix("_loss")] = totals.get(key.removesuffix("_loss"), 0.0) + float(value.detach())
        if step % args.every == 0:
            measure(step, {k: v / args.every for k, v in totals.items()})
            totals = {}
    return rows


if __name__ == "__main__":
    main()
