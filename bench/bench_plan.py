"""The planner against measurement: predicted vs measured peak memory, FLOPs and time of the bench's step (issue 17).

For each recipe and batch size, bench/bench_train.py measures its training step in a subprocess (peak memory,
s/step) and processor/plan.py plans the same step: the bench's own synthetic batches (same seed), so the text
lengths and MLM-masked positions the planner is given are those of the measured batches. FLOPs are compared with
torch's count (FlopCounterMode) of one real step on that batch. On CUDA, the step's time is compared with the
planner's bounds for ``--gpu`` and, with AMP, the autocast step's losses with the fp32 step's (same weights,
same batch).

    python bench/bench_plan.py [--recipes irra_sgiha] [--batch_sizes 4 16] [--amp none|fp16|bf16]
        [--grad_checkpoint] [--compile] [--device cpu|cuda] [--gpu H200-141GB] [--tiny] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import bench_train  # noqa: E402
from bench.report import publish  # noqa: E402
from model.build import build_model  # noqa: E402
from processor.amp import build_grad_scaler  # noqa: E402
from processor.gpus import GPU_SPECS  # noqa: E402
from processor.plan import ASSUMED_UTILISATION, GIB, TERA, TextShapes, batch_shapes, peak_tflops, plan_step  # noqa: E402
from solver.build import build_optimizer  # noqa: E402
from utils.precision import autocast, resolve_device  # noqa: E402


def infer_gpu(device: torch.device) -> str | None:
    """The GPU_SPECS name of ``device``: its model in the device name, the closest memory size among them."""
    name = torch.cuda.get_device_name(device).replace(" ", "")
    memory = torch.cuda.get_device_properties(device).total_memory / GIB
    models = [key for key in GPU_SPECS if key.split("-")[0] in name]
    return min(models, key=lambda key: abs(GPU_SPECS[key].memory_gib - memory)) if models else None


def measured_batches(cfg, num_classes: int, device: torch.device, args: argparse.Namespace) -> list[dict]:
    """The synthetic batches over which the bench's worker takes its peak (same seed, same order)."""
    generator = torch.Generator().manual_seed(bench_train.SEED)
    count = bench_train.MEMORY_STEPS if device.type == "cpu" else args.warmup + args.steps
    return [bench_train.synthetic_batch(cfg, num_classes, generator) for _ in range(count)]


def peak_shapes(cfg, batches: Sequence[dict], device: torch.device) -> TextShapes:
    """CPU: the last memory step's batch (the one with Adam's state held). CUDA: the longest of all of them."""
    if device.type == "cpu":
        return batch_shapes(cfg, batches[-1])
    shapes = [batch_shapes(cfg, b) for b in batches]
    return TextShapes(max(s.caption_length for s in shapes), max(s.answer_length for s in shapes),
                      max(s.mlm_masked for s in shapes), "the longest of the measured batches")


def real_step_flops(cfg, num_classes: int, batch: dict, device: torch.device, amp: str) -> int:
    """torch's FLOP count of one real training step on ``batch``."""
    torch.manual_seed(bench_train.SEED)
    model = build_model(cfg, num_classes).to(device).train()
    optimizer = build_optimizer(cfg, model)
    with FlopCounterMode(display=False) as counter:
        bench_train.train_step(model, batch, optimizer, build_grad_scaler(device, amp), device, amp)
    return counter.get_total_flops()


def amp_loss_gap(cfg, num_classes: int, batch: dict, device: torch.device, amp: str) -> float:
    """Largest relative difference between the autocast step's weighted losses and the fp32 step's (forward,
    same weights, same batch)."""
    torch.manual_seed(bench_train.SEED)
    model = build_model(cfg, num_classes).to(device).train()
    batch = {k: v.to(device) for k, v in batch.items()}
    with torch.no_grad():
        exact = model(batch)
        with autocast(device, amp):
            mixed = model(batch)
    return max(abs(float(mixed[k]) / float(exact[k]) - 1) for k in exact if k.endswith("_loss"))


def compare(recipe: str, batch_size: int, args: argparse.Namespace) -> dict:
    """Measured and planned figures of one recipe at one batch size."""
    device = resolve_device(args.device)
    worker = bench_train.parse_args(["--batch_size", str(batch_size), "--amp", args.amp, "--steps", str(args.steps),
                                     "--warmup", str(args.warmup), "--device", args.device]
                                    + ["--grad_checkpoint"] * args.grad_checkpoint + ["--tiny"] * args.tiny
                                    + ["--compile"] * args.compile)
    measured = bench_train.run_in_subprocess(recipe, worker)
    cfg = bench_train.bench_config(recipe, batch_size, args.amp, args.grad_checkpoint, args.tiny)
    num_classes = bench_train.TINY_NUM_CLASSES if args.tiny else bench_train.NUM_CLASSES
    batches = measured_batches(cfg, num_classes, device, worker)
    planned = plan_step(cfg, num_classes, peak_shapes(cfg, batches, device), args.amp)
    last = planned if device.type == "cpu" else plan_step(cfg, num_classes, batch_shapes(cfg, batches[-1]), args.amp)
    row = {"recipe": recipe, "batch_size": batch_size, "planned": planned, "measured": measured,
           "real_flops": real_step_flops(cfg, num_classes, batches[-1], device, args.amp), "planned_flops": last.flops}
    if device.type == "cuda" and args.amp != "none":
        row["amp_loss_gap"] = amp_loss_gap(cfg, num_classes, batches[-1], device, args.amp)
    return row


def format_table(rows: list[dict], args: argparse.Namespace, machine: str) -> str:
    """Markdown: planned vs measured peak, FLOPs, and on CUDA the time bounds and the AMP loss gap."""
    cuda = resolve_device(args.device).type == "cuda"
    tflops = peak_tflops(GPU_SPECS[args.gpu], args.amp) if cuda and args.gpu else None
    header = ["recipe", "batch", "peak predicted (GiB)", "peak measured (GiB)", "predicted / measured",
              "weights / grads / Adam / activations / temporaries at the peak (GiB)", "GFLOP predicted",
              "GFLOP real step", "equal"]
    if tflops:
        header += ["s/step measured", f"s/step at {args.gpu} peak", f"s/step at {ASSUMED_UTILISATION:.0%}",
                   "achieved share of peak"]
    if cuda and args.amp != "none":
        header.append("AMP loss vs fp32 (max rel.)")
    lines = [machine, "", f"Setting: amp {args.amp}, activation checkpointing {'on' if args.grad_checkpoint else 'off'}"
             f", compile {'on' if args.compile else 'off'}; predicted: processor/plan.py on fake tensors with the "
             f"measured batches' text lengths; measured: bench/bench_train.py.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        planned, measured = r["planned"], r["measured"]
        parts = planned.breakdown
        cells = [r["recipe"], str(r["batch_size"]), f"{planned.peak_bytes / GIB:.2f}",
                 f"{measured['peak_bytes'] / GIB:.2f}", f"{planned.peak_bytes / measured['peak_bytes']:.3f}",
                 " / ".join(f"{parts[k] / GIB:.2f}" for k in ("weights", "gradients", "optimizer_state",
                                                              "activations", "temporaries")),
                 f"{r['planned_flops'] / 1e9:.1f}", f"{r['real_flops'] / 1e9:.1f}",
                 "yes" if r["planned_flops"] == r["real_flops"] else "no"]
        if tflops:
            bound = r["planned_flops"] / (tflops * TERA)
            cells += [f"{measured['s_per_step']:.4f}", f"{bound:.4f}", f"{bound / ASSUMED_UTILISATION:.4f}",
                      f"{bound / measured['s_per_step']:.0%}"]
        if "amp_loss_gap" in r:
            cells.append(f"{r['amp_loss_gap']:.2e}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", choices=bench_train.RECIPES, default=["irra_sgiha"])
    parser.add_argument("--batch_sizes", nargs="+", type=int, default=[4, 16])
    parser.add_argument("--amp", choices=["none", "fp16", "bf16"], default="none")
    parser.add_argument("--grad_checkpoint", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--steps", type=int, default=1, help="timed steps of the bench")
    parser.add_argument("--warmup", type=int, default=0, help="untimed steps of the bench before them")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--gpu", choices=sorted(GPU_SPECS),
                        help="the GPU's spec for the time bounds (CUDA; default: from the device's name)")
    parser.add_argument("--tiny", action="store_true", help="tiny backbone (smoke test)")
    parser.add_argument("--out", type=Path, help="also write the markdown table to this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> str:
    args = parse_args(argv)
    device = resolve_device(args.device)
    if device.type == "cuda" and args.gpu is None:
        args.gpu = infer_gpu(device)
    load_before = os.getloadavg()[0]
    rows = [compare(recipe, size, args) for recipe in args.recipes for size in args.batch_sizes]
    machine = bench_train.machine_line(device, load_before, os.getloadavg()[0])
    return publish(format_table(rows, args, machine), args.out)


if __name__ == "__main__":
    main()
