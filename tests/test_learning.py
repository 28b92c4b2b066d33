"""Learning test: a short fixed-seed CPU run of the demo recipe whose assertions fail when AQA or SDM does not learn.

The demo's config shrunk (tests/tiny_run.py sizes), with the demo's own temperatures, learning rates and gradient
route (docs/experiments/demo.md point 8), trains on two fixed batches of the tiny toy set; the AQA
loss must end below half its chance value (2 ln B: symmetric InfoNCE with uniform scores) with answer->bridge
accuracy far above 1/B, and the SDM loss below half its first value. A second run with an SG-IHA head whose
output carries no per-sample information (the batch mean) must fail the AQA check: the check can fail.
"""
from __future__ import annotations

import math
from typing import Callable

import pytest
import torch

from datasets.build import build_dataloaders
from model.build import build_model
from processor.amp import backward_step
from solver.build import build_optimizer
from tests.tiny_run import make_tiny_toy, tiny_args
from utils.config import load_config
from utils.seed import set_seed

BATCH = 16
STEPS = 200  # optimizer steps over the two fixed batches (seed 0 ends at AQA 0.49, accuracy 0.91; chance 5.55)
LOSS_FRACTION = 0.5  # final loss at most this fraction of chance (AQA) or of the first value (SDM)
MIN_ACC_OVER_CHANCE = 4.0  # final AQA accuracy at least this many times 1/B


def _config(toy_root, tmp_path):
    argv = tiny_args(toy_root, tmp_path, "--batch_size", str(BATCH), "--seed", "0")
    return load_config(argv[1], argv[2:])


def _train(toy_root, tmp_path, sabotage: Callable[[torch.nn.Module], None] | None = None) -> dict[str, float]:
    """First and last losses and the last AQA accuracy over two fixed batches."""
    cfg = _config(toy_root, tmp_path)
    set_seed(cfg.seed)
    data = build_dataloaders(cfg)
    loader = iter(data.train_loader)
    batches = [next(loader) for _ in range(2)]
    model = build_model(cfg, data.num_classes)
    if sabotage is not None:
        sabotage(model)
    optimizer = build_optimizer(cfg, model)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    history = []
    for step in range(STEPS):
        out = model(batches[step % 2])
        history.append({k: float(v.detach()) for k, v in out.items()})
        backward_step(sum(v for k, v in out.items() if k.endswith("_loss")), optimizer, scaler)
    first, last = history[:2], history[-2:]  # one step on each batch

    def mean(rows, key):
        return sum(r[key] for r in rows) / len(rows)

    return {"sdm_first": mean(first, "sdm_loss"), "sdm_last": mean(last, "sdm_loss"),
            "aqa_last": mean(last, "aqa_loss"), "aqa_acc": mean(last, "aqa_acc")}


def learning_failures(result: dict[str, float]) -> list[str]:
    """What did not learn (empty when both losses learned)."""
    chance = 2 * math.log(BATCH)
    failures = []
    if not result["aqa_last"] <= LOSS_FRACTION * chance:
        failures.append(f"aqa loss {result['aqa_last']:.3f} > {LOSS_FRACTION} x chance {chance:.3f}")
    if not result["aqa_acc"] >= MIN_ACC_OVER_CHANCE / BATCH:
        failures.append(f"aqa accuracy {result['aqa_acc']:.3f} < {MIN_ACC_OVER_CHANCE} / {BATCH}")
    if not result["sdm_last"] <= LOSS_FRACTION * result["sdm_first"]:
        failures.append(f"sdm loss {result['sdm_last']:.3f} > {LOSS_FRACTION} x first {result['sdm_first']:.3f}")
    return failures


@pytest.fixture(scope="module")
def learning_toy(tmp_path_factory):
    return make_tiny_toy(tmp_path_factory.mktemp("learning_toy"))


@pytest.mark.slow
def test_aqa_and_sdm_learn(learning_toy, tmp_path):
    assert learning_failures(_train(learning_toy, tmp_path)) == []


def _uninformative_head(model: torch.nn.Module) -> None:
    """SG-IHA's output replaced by its batch mean: nothing of the sample's image or question reaches AQA."""
    model.sgiha.register_forward_hook(lambda module, args, out: out.mean(0, keepdim=True).expand_as(out))


@pytest.mark.slow
def test_the_check_fails_when_the_head_cannot_answer(learning_toy, tmp_path):
    failures = learning_failures(_train(learning_toy, tmp_path, _uninformative_head))
    assert any(f.startswith("aqa loss") for f in failures), failures
