"""Training-step modes side by side (issue 32): eager with kept text lengths (``fixed_shapes: false``), eager with
fixed shapes, and the fixed-shape step compiled (``compile: true``; on CUDA also ``reduce-overhead``, CUDA graphs).

For each: median seconds per step (the modes' steps alternate, so a load change on a shared machine hits all of
them alike), compile time (the first compiled steps less an eager step), the step's peak memory, and the work a
step dispatches: aten ops per eager step against the kernels inductor generated for the compiled forward and
backward. Batches come from bench/bench_train.py (the dataset's own MLM masking, questions, answers); sizes:
``demo`` (configs/demo.yaml's tiny CLIP, toy-caption lengths) and ``vitb16`` (configs/CUHK-PEDES/irra_sgiha.yaml,
ViT-B/16 at 384x128, CUHK-PEDES caption lengths).

    python bench/bench_step_modes.py [--sizes demo vitb16] [--modes eager-dynamic eager-fixed compiled]
        [--batch_size N] [--amp none|fp16|bf16] [--repeats 5] [--device auto|cpu|cuda] [--threads N] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench.bench_train as bench_train  # noqa: E402
from bench.bench_train import NUM_CLASSES, SEED, machine_line, synthetic_batch, train_step  # noqa: E402
from bench.memory import cpu_allocation_peak  # noqa: E402
from bench.report import publish  # noqa: E402
from model.build import build_model  # noqa: E402
from processor.amp import build_grad_scaler  # noqa: E402
from solver.build import build_optimizer  # noqa: E402
from utils.config import CONFIG_DIR, Config, load_config  # noqa: E402
from utils.precision import resolve_device  # noqa: E402

MODES = ("eager-dynamic", "eager-fixed", "compiled", "reduce-overhead")
# size -> (config file, default batch, caption BPE tokens between SOT and EOT, inclusive: the toy's / CUHK-PEDES's)
SIZES = {"demo": ("demo.yaml", 32, (24, 34)), "vitb16": ("CUHK-PEDES/irra_sgiha.yaml", 4, (40, 60))}
DEMO_NUM_CLASSES = 200  # configs/demo.yaml: training identities of the toy
COMPILE_STEPS = 2  # compiled steps untimed: the first compiles forward and backward, the second runs them
GIB = 2 ** 30


class OpCount(TorchDispatchMode):
    """Counts the aten ops a block dispatches (each at least one kernel launch on a GPU)."""

    def __init__(self):
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func] += 1
        return func(*args, **(kwargs or {}))


def size_config(size: str, batch_size: int, device: torch.device, fixed: bool, amp: str) -> Config:
    """The size's config with random weights and the benchmark's batch and precision."""
    config, _, _ = SIZES[size]
    return load_config(str(CONFIG_DIR / config), {"pretrain_choice": "none", "batch_size": batch_size,
                                                  "amp": amp, "fixed_shapes": fixed, "device": device.type,
                                                  "compile": False})


class Mode:
    """One mode's model, optimizer and measurements."""

    def __init__(self, name: str, size: str, batch_size: int, device: torch.device, num_classes: int, amp: str):
        self.name, self.device, self.amp = name, device, amp
        self.cfg = size_config(size, batch_size, device, name != "eager-dynamic", amp)
        torch.manual_seed(SEED)
        self.model = build_model(self.cfg, num_classes).to(device).train()
        self.optimizer = build_optimizer(self.cfg, self.model)
        self.scaler = build_grad_scaler(device, amp)
        self.runner: torch.nn.Module = self.model
        self.times: list[float] = []
        self.compile_seconds: float | None = None
        self.kernels: int | None = None

    def step(self, batch: dict) -> float:
        """Seconds of one whole training step (the device drained before and after)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        train_step(self.runner, batch, self.optimizer, self.scaler, self.device, self.amp)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    def compile(self, next_batch: Callable[[], dict], eager_seconds: float) -> None:
        """Compile forward and losses as one graph; compile time = the untimed first steps less eager steps."""
        from torch._inductor import metrics

        torch._dynamo.reset()
        metrics.reset()
        mode = "reduce-overhead" if self.name == "reduce-overhead" else None
        self.runner = torch.compile(self.model, mode=mode, fullgraph=True)
        seconds = sum(self.step(next_batch()) for _ in range(COMPILE_STEPS))
        self.compile_seconds = seconds - COMPILE_STEPS * eager_seconds
        self.kernels = metrics.generated_kernel_count

    def peak_bytes(self, batch: dict) -> int:
        """Peak memory of one steady-state step: on CUDA what the allocator held at most (weights, gradients and
        Adam state included); on CPU the most the step itself allocated above what was held before it."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.step(batch)
            return torch.cuda.max_memory_allocated(self.device)
        with cpu_allocation_peak() as memory:
            self.step(batch)
        return memory["peak_bytes"]


def aten_ops(mode: Mode, batch: dict) -> int:
    """Aten ops of one eager step (forward, losses, backward, Adam step)."""
    with OpCount() as counter:
        mode.step(batch)
    return sum(counter.ops.values())


def measure_size(size: str, args: argparse.Namespace) -> list[dict]:
    """Every mode of one size; timed steps alternate between the modes."""
    device = resolve_device(args.device)
    _, default_batch, caption_tokens = SIZES[size]
    batch_size = args.batch_size or default_batch
    num_classes = DEMO_NUM_CLASSES if size == "demo" else NUM_CLASSES
    bench_train.CAPTION_TOKENS = caption_tokens  # the size's caption lengths for synthetic_batch
    modes = [m for m in args.modes if m != "reduce-overhead" or device.type == "cuda"]
    runs = [Mode(name, size, batch_size, device, num_classes, args.amp) for name in modes]
    generator = torch.Generator().manual_seed(SEED)
    cfg = runs[0].cfg
    batches = [synthetic_batch(cfg, num_classes, generator) for _ in range(args.repeats + 1 + COMPILE_STEPS)]
    cycle = iter(batches * 4)
    eager = [r for r in runs if r.name.startswith("eager")]
    for run in eager:
        run.step(batches[0])  # Adam's state; the first eager step
    # an eager step's time, subtracted from the compiled warm-up (0 when no eager mode runs)
    eager_seconds = statistics.median([eager[0].step(batches[1]) for _ in range(2)]) if eager else 0.0
    ops = {r.name: aten_ops(r, batches[0]) for r in eager}
    for run in runs:
        if not run.name.startswith("eager"):
            run.compile(lambda: next(cycle), eager_seconds)
    for repeat in range(args.repeats):
        for run in runs:
            run.times.append(run.step(batches[1 + repeat]))
        print(f"{size} repeat {repeat + 1}: " + " ".join(f"{r.name} {r.times[-1]:.3f}s" for r in runs),
              file=sys.stderr, flush=True)
    rows = []
    for run in runs:
        rows.append({"size": size, "mode": run.name, "batch_size": batch_size,
                     "s_per_step": statistics.median(run.times), "times": run.times,
                     "compile_seconds": run.compile_seconds, "peak_bytes": run.peak_bytes(batches[0]),
                     "aten_ops": ops.get(run.name), "kernels": run.kernels})
    return rows


def format_table(rows: list[dict], args: argparse.Namespace, machine: str) -> str:
    device = resolve_device(args.device)
    memory = ("torch.cuda.max_memory_allocated over one step" if device.type == "cuda"
              else "the most one steady-state step allocated (torch's CPU allocator, profiler events)")
    lines = [
        machine, "",
        f"amp {args.amp}, Adam step included; median of {args.repeats} alternating steps per mode after warm-up. "
        f"Compile time: the first {COMPILE_STEPS} compiled steps less as many eager steps. Peak memory: {memory}. "
        f"Work per step: aten ops an eager step dispatches (forward, losses, backward, Adam) against the kernels "
        f"inductor generated for the compiled forward and backward (matrix products and attention run as library calls "
        f"beside them; the Adam step stays one fused op).", "",
        "| size | batch | mode | s/step | range (s) | vs eager-dynamic | compile (s) | peak memory (GiB) "
        "| aten ops / step | generated kernels |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {r["size"]: r["s_per_step"] for r in rows if r["mode"] == "eager-dynamic"}
    for r in rows:
        ratio = f"{r['s_per_step'] / base[r['size']]:.2f}x" if r["size"] in base else ""
        compile_time = "" if r["compile_seconds"] is None else f"{r['compile_seconds']:.0f}"
        cells = [r["size"], str(r["batch_size"]), r["mode"], f"{r['s_per_step']:.3f}",
                 f"{min(r['times']):.3f}-{max(r['times']):.3f}", ratio, compile_time,
                 f"{r['peak_bytes'] / GIB:.3f}", "" if r["aten_ops"] is None else str(r["aten_ops"]),
                 "" if r["kernels"] is None else str(r["kernels"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="reduce-overhead runs on CUDA only")
    parser.add_argument("--batch_size", type=int, help="default: 32 for demo, 4 for vitb16")
    parser.add_argument("--amp", choices=["none", "fp16", "bf16"], default="none", help="autocast precision")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per mode")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's); 1 resists a shared machine's"
                        " load best (no thread waits for a descheduled sibling)")
    parser.add_argument("--out", type=Path, help="also write the markdown table to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1; got {args.repeats}")
    return args


def main(argv: Sequence[str] | None = None) -> str:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    load_before = os.getloadavg()[0]
    rows = [row for size in args.sizes for row in measure_size(size, args)]
    return publish(format_table(rows, args, machine_line(device, load_before, os.getloadavg()[0])), args.out)


if __name__ == "__main__":
    main()
