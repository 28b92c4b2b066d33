"""Inference benchmark: feature-extraction throughput of the retrieval model of each recipe (issue 5, item 3c).

For every recipe the training model is built (random weights, full ViT-B/16 at 384x128 unless ``--tiny``), its
retrieval part is taken the way test.py takes it (``retrieval_state_dict`` into ``build_retrieval_model``), and
the script shows that the four are the same model (method §6.5): equal parameter counts, the same state-dict
entries, and identical features once given the first recipe's backbone weights. Images/s and captions/s are
then timed in interleaved rounds (every model once per round), so that load changes on a shared machine hit all
models alike.

    python bench/bench_inference.py [--recipes ...] [--batch_size 32] [--batches 3] [--amp none|fp16|bf16]
        [--device auto|cpu|cuda] [--out FILE.md] [--tiny]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.bench_train import NUM_CLASSES, RECIPES, SEED, TINY_NUM_CLASSES, bench_config, machine_line, synthetic_batch  # noqa: E402
from bench.report import publish  # noqa: E402
from model.build import build_model, build_retrieval_model, retrieval_state_dict  # noqa: E402
from model.clip import CLIP  # noqa: E402
from utils.precision import autocast, resolve_device  # noqa: E402

PROBE_SIZE = 2  # images and captions of the identical-output check


def retrieval_part(recipe: str, args: argparse.Namespace) -> tuple[CLIP, int]:
    """The recipe's training model reduced to its retrieval model (as test.py loads it); training-model size."""
    cfg = bench_config(recipe, args.batch_size, args.amp, False, args.tiny)
    training = build_model(cfg, TINY_NUM_CLASSES if args.tiny else NUM_CLASSES)
    retrieval = build_retrieval_model(cfg)
    retrieval.load_state_dict(retrieval_state_dict(training.state_dict()))
    return retrieval.eval(), sum(p.numel() for p in training.parameters())


def features(model: CLIP, batch: dict[str, Tensor], device: torch.device, amp: str) -> tuple[Tensor, Tensor]:
    """Image and caption features of ``batch`` in inference mode."""
    with torch.inference_mode(), autocast(device, amp):
        return model.encode_image(batch["images"].to(device)), model.encode_text(batch["caption_ids"].to(device))


def timed(fn: Callable[[], Tensor], device: torch.device) -> float:
    """Seconds ``fn`` takes, CUDA work included."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def same_model_checks(models: dict[str, CLIP], probe: dict[str, Tensor], device: torch.device,
                      amp: str) -> dict[str, bool]:
    """Per recipe: same entries and shapes as the first recipe's model, and identical features given its weights."""
    names = list(models)
    reference = models[names[0]].state_dict()
    expected = features(models[names[0]], probe, device, amp)
    same = {}
    for name in names:
        state = models[name].state_dict()
        if {k: v.shape for k, v in state.items()} != {k: v.shape for k, v in reference.items()}:
            same[name] = False
            continue
        own = {k: v.clone() for k, v in state.items()}
        models[name].load_state_dict(reference)
        got = features(models[name], probe, device, amp)
        same[name] = all(torch.equal(a, b) for a, b in zip(got, expected))
        models[name].load_state_dict(own)
    return same


def measure(args: argparse.Namespace) -> list[dict]:
    """Build every recipe's retrieval model, check they are one model, time feature extraction."""
    device = resolve_device(args.device)
    torch.manual_seed(SEED)
    models, training_params = {}, {}
    for recipe in args.recipes:
        model, training_params[recipe] = retrieval_part(recipe, args)
        models[recipe] = model.to(device)
    cfg = bench_config(args.recipes[0], args.batch_size, args.amp, False, args.tiny)
    generator = torch.Generator().manual_seed(SEED)
    batches = [synthetic_batch(cfg, 1, generator) for _ in range(args.batches + 1)]
    probe = {k: v[:PROBE_SIZE] for k, v in batches[0].items()}
    same = same_model_checks(models, probe, device, args.amp)
    seconds = {name: {"images": 0.0, "captions": 0.0} for name in models}
    for round_index, batch in enumerate(batches):  # round 0 is the untimed warm-up
        images, captions = batch["images"].to(device), batch["caption_ids"].to(device)
        for name, model in models.items():
            with torch.inference_mode(), autocast(device, args.amp):
                image_s = timed(lambda: model.encode_image(images), device)
                caption_s = timed(lambda: model.encode_text(captions), device)
            if round_index:
                seconds[name]["images"] += image_s
                seconds[name]["captions"] += caption_s
    count = args.batches * args.batch_size
    return [{"recipe": name, "training_params": training_params[name],
             "retrieval_params": sum(p.numel() for p in model.parameters()), "same_as_first": same[name],
             "images_per_s": count / seconds[name]["images"], "captions_per_s": count / seconds[name]["captions"],
             "samples": count} for name, model in models.items()]


def format_table(rows: list[dict], args: argparse.Namespace, machine: str) -> str:
    """Markdown: one row per recipe with its model sizes, the identity check and the throughputs."""
    size = "tiny backbone (smoke test)" if args.tiny else "ViT-B/16, 384x128, captions of 40-60 tokens"
    lines = [
        machine, "",
        f"Setting: {size}, batch {args.batch_size}, amp {args.amp}, {args.batches} timed batches per model after "
        f"one warm-up batch, interleaved across models. 'Same model' = same state-dict entries as "
        f"{args.recipes[0]}'s retrieval model and bit-identical features given its weights.", "",
        "| trained with | training-model parameters | retrieval-model parameters | same model | images/s "
        "| captions/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['training_params']:,} | {r['retrieval_params']:,} "
                     f"| {'yes' if r['same_as_first'] else 'NO'} | {r['images_per_s']:.2f} "
                     f"| {r['captions_per_s']:.2f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES), help="recipes to compare")
    parser.add_argument("--batch_size", type=int, default=32, help="images / captions per batch")
    parser.add_argument("--batches", type=int, default=3, help="timed batches per model")
    parser.add_argument("--amp", choices=["none", "fp16", "bf16"], default="none", help="autocast precision")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--out", type=Path, help="also write the markdown table to this file")
    parser.add_argument("--tiny", action="store_true", help="tiny backbone (smoke test)")
    args = parser.parse_args(argv)
    if args.batches < 1 or args.batch_size < PROBE_SIZE:
        parser.error(f"need --batches >= 1 and --batch_size >= {PROBE_SIZE}; got {args.batches}, {args.batch_size}")
    return args


def main(argv: Sequence[str] | None = None) -> str:
    args = parse_args(argv)
    device = resolve_device(args.device)
    load_before = os.getloadavg()[0]
    rows = measure(args)
    return publish(format_table(rows, args, machine_line(device, load_before, os.getloadavg()[0])), args.out)


if __name__ == "__main__":
    main()
