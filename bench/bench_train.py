"""Training-step benchmark: seconds per step, samples/s and peak memory of each recipe (issue 5, item 3a).

Full ViT-B/16 at 384x128 with random weights (``pretrain_choice none``: same cost as OpenAI's weights), the
ID classifier of CUHK-PEDES (11,003 identities, method §2), synthetic batches shaped like real ones (captions of
40-60 tokens, ~15% MLM-masked positions, a question with 2-3 masked tokens, an answer of ~6 tokens) and the
whole step: forward under autocast, backward, Adam step (``build_optimizer``, method §7 groups).

Each recipe runs in a fresh subprocess. Peak memory is the most that torch's allocator held at once from the model's
construction through the steps: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the running sum of the
allocator's own allocation and free events (torch.profiler with ``profile_memory``) over the model's construction
and ``MEMORY_STEPS`` untimed steps, so that memory the process already held from earlier work cannot hide it
(issue 20). The whole process's resident-set peak (/proc/self/status VmHWM, Python and torch included) is shown too.

    python bench/bench_train.py [--recipes irra irra_sgiha ...] [--batch_size 4] [--amp none|fp16|bf16]
        [--grad_checkpoint] [--steps 3] [--warmup 1] [--device auto|cpu|cuda] [--out FILE.md] [--tiny]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.memory import cpu_allocation_peak  # noqa: E402
from bench.report import publish  # noqa: E402
from datasets.mlm import FIRST_WORD_ID, mask_tokens  # noqa: E402
from model.build import build_model  # noqa: E402
from processor.amp import backward_step, build_grad_scaler  # noqa: E402
from solver.build import build_optimizer  # noqa: E402
from utils.config import CONFIG_DIR, Config, load_config  # noqa: E402
from utils.precision import autocast, resolve_device  # noqa: E402
from utils.tokenizer import get_tokenizer  # noqa: E402

RECIPES = ("clip_finetune", "clip_finetune_sgiha", "irra", "irra_sgiha")  # configs/CUHK-PEDES/<recipe>.yaml
SGIHA_BASE = {"clip_finetune_sgiha": "clip_finetune", "irra_sgiha": "irra"}  # SG-IHA recipe -> its base recipe
NUM_CLASSES = 11_003       # method §2: CUHK-PEDES training identities (ID classifier width)
CAPTION_TOKENS = (40, 60)  # BPE tokens of a caption between SOT and EOT (CUHK-PEDES captions), inclusive range
PHRASE_TOKENS = (2, 3)     # masked tokens of a question = tokens of its answer phrase, inclusive range
SEED = 0                   # synthetic batches and model initialisation
MEMORY_STEPS = 2           # CPU peak: step 1 creates Adam's state, step 2 runs with it held (the steady state)
# --tiny: a small backbone for smoke tests (the recipe configs stay as they are otherwise).
TINY_OVERRIDES = {
    "img_size": [32, 16], "backbone.embed_dim": 32, "backbone.vision_width": 32, "backbone.text_width": 32,
    "backbone.vision_layers": 3, "backbone.text_layers": 3, "backbone.vision_heads": 2, "backbone.text_heads": 2,
    "mlm.heads": 2, "mlm.cmt_depth": 1, "sgiha.heads": 2, "sgiha.layers": [1, 2],
}
TINY_NUM_CLASSES = 20
# Issue 5's figures of the authors' release on this kind of CPU machine (fp32, batch 4, 384x128, Adam step):
# recipe -> ((s/step low, s/step high), peak GiB).
RELEASE = {"irra_sgiha": ((5.6, 5.7), 6.2), "clip_finetune_sgiha": ((3.9, 4.5), 5.3), "irra": ((4.1, 4.1), 5.2)}
RELEASE_SETTING = {"batch_size": 4, "amp": "none", "device": "cpu", "grad_checkpoint": False, "tiny": False,
                   "compile": False}
GIB = 2 ** 30
RESULT_MARK = "BENCH_RESULT "  # prefix of the worker's JSON line on stdout


def bench_config(recipe: str, batch_size: int, amp: str, grad_checkpoint: bool, tiny: bool) -> Config:
    """The recipe's CUHK-PEDES config with random backbone weights and the benchmark's settings."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; expected one of {list(RECIPES)}")
    overrides = {"pretrain_choice": "none", "batch_size": batch_size, "amp": amp, "grad_checkpoint": grad_checkpoint}
    if tiny:
        overrides.update(TINY_OVERRIDES)
    return load_config(str(CONFIG_DIR / "CUHK-PEDES" / f"{recipe}.yaml"), overrides)


def synthetic_batch(cfg: Config, num_classes: int, generator: torch.Generator) -> dict[str, Tensor]:
    """A training batch with the content statistics of a real one (the dataset's own MLM masking)."""
    tok = get_tokenizer()
    size, length = cfg.batch_size, cfg.text_length
    batch: dict[str, list[Tensor]] = {k: [] for k in ("caption_ids", "mlm_ids", "mlm_labels", "question_ids",
                                                       "question_mask", "answer_ids")}
    for _ in range(size):
        words = int(torch.randint(CAPTION_TOKENS[0], CAPTION_TOKENS[1] + 1, (1,), generator=generator))
        words = min(words, length - 2)  # SOT and EOT must fit
        caption = torch.zeros(length, dtype=torch.long)
        caption[0], caption[words + 1] = tok.sot_id, tok.eot_id
        caption[1:words + 1] = torch.randint(FIRST_WORD_ID, tok.mask_id, (words,), generator=generator)
        mlm_ids, mlm_labels = mask_tokens(caption, mask_id=tok.mask_id, prob=cfg.mlm.prob,
                                          mask_ratio=cfg.mlm.mask_ratio, random_ratio=cfg.mlm.random_ratio,
                                          generator=generator)
        # method §6.1: the question masks one phrase of the caption; the answer is prefix masks + that phrase.
        k = int(torch.randint(PHRASE_TOKENS[0], PHRASE_TOKENS[1] + 1, (1,), generator=generator))
        start = 1 + int(torch.randint(0, words - k + 1, (1,), generator=generator))
        question = caption.clone()
        question[start:start + k] = tok.mask_id
        answer_tokens = [tok.sot_id] + [tok.mask_id] * cfg.sgiha.answer_prefix_masks
        answer_tokens += caption[start:start + k].tolist() + [tok.eot_id]
        answer = torch.zeros(length, dtype=torch.long)
        answer[:len(answer_tokens)] = torch.tensor(answer_tokens)
        question_mask = (torch.arange(length) <= words + 1).long()  # SOT through EOT
        for key, value in zip(batch, (caption, mlm_ids, mlm_labels, question, question_mask, answer)):
            batch[key].append(value)
    height, width = cfg.img_size
    out = {k: torch.stack(v) for k, v in batch.items()}
    out["images"] = torch.randn(size, 3, height, width, generator=generator)
    out["pids"] = torch.randint(0, num_classes, (size,), generator=generator)
    out["image_ids"] = torch.arange(size)
    return out


def batch_statistics(batch: dict[str, Tensor]) -> dict[str, float]:
    """Mean caption tokens (SOT..EOT excluded), masked share of them, question masks, answer tokens."""
    caption_tokens = (batch["caption_ids"] > 0).sum(1) - 2
    return {
        "caption_tokens": float(caption_tokens.float().mean()),
        "mlm_masked_share": float((batch["mlm_labels"] > 0).sum() / caption_tokens.sum()),
        "question_masks": float((batch["question_ids"] == get_tokenizer().mask_id).float().sum(1).mean()),
        "answer_tokens": float(((batch["answer_ids"] > 0).sum(1) - 2).float().mean()),
    }


def proc_status_bytes() -> dict[str, int]:
    """VmRSS and VmHWM of this process in bytes (Linux /proc; values there are in KiB)."""
    values = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(line.split()[1]) * 1024
    return values


def train_step(model: torch.nn.Module, batch: dict[str, Tensor], optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, device: torch.device, amp: str) -> dict[str, float]:
    """One training step as processor/trainer.py runs it; the step's losses."""
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    with autocast(device, amp):
        outputs = model(batch)
    loss = sum(v for k, v in outputs.items() if k.endswith("_loss"))
    backward_step(loss, optimizer, scaler)
    return {k: float(v.detach()) for k, v in outputs.items() if k.endswith("_loss")}


def build_and_step(cfg: Config, num_classes: int, device: torch.device, amp: str, steps: int,
                   next_batch: Callable[[], dict[str, Tensor]]) -> tuple:
    """Model, optimizer and scaler after ``steps`` untimed training steps."""
    model = build_model(cfg, num_classes).to(device).train()
    optimizer = build_optimizer(cfg, model)
    scaler = build_grad_scaler(device, amp)
    for _ in range(steps):
        train_step(model, next_batch(), optimizer, scaler, device, amp)
    return model, optimizer, scaler


def measure_recipe(recipe: str, args: argparse.Namespace) -> dict:
    """Build the recipe, run ``warmup`` untimed and ``steps`` timed training steps; timings, memory, counts."""
    device = resolve_device(args.device)
    cfg = bench_config(recipe, args.batch_size, args.amp, args.grad_checkpoint, args.tiny)
    num_classes = TINY_NUM_CLASSES if args.tiny else NUM_CLASSES
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    stats: list[dict[str, float]] = []

    def next_batch() -> dict[str, Tensor]:
        batch = synthetic_batch(cfg, num_classes, generator)
        stats.append(batch_statistics(batch))
        return batch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        model, optimizer, scaler = build_and_step(cfg, num_classes, device, args.amp, 0, next_batch)
    else:
        with cpu_allocation_peak() as cpu_memory:
            model, optimizer, scaler = build_and_step(cfg, num_classes, device, args.amp, MEMORY_STEPS, next_batch)
    if args.compile:  # after the memory block: compiling is not part of a step
        model = torch.compile(model)
    times, losses = [], {}
    for step in range(args.warmup + args.steps):
        batch = next_batch()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        losses = train_step(model, batch, optimizer, scaler, device, args.amp)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else cpu_memory["peak_bytes"]
    return {
        "recipe": recipe, "losses": list(cfg.losses), "batch_size": cfg.batch_size, "steps": len(times),
        "samples": cfg.batch_size * len(times), "step_times": times, "s_per_step": statistics.median(times),
        "peak_bytes": peak, "process_peak_bytes": proc_status_bytes()["VmHWM"],
        "params": sum(p.numel() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "backbone_params": sum(p.numel() for p in model.backbone.parameters()),
        "last_losses": losses, "batch_stats": {k: statistics.fmean(s[k] for s in stats) for k in stats[0]},
    }


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The command-line options a worker subprocess needs to repeat this run's settings."""
    argv = ["--batch_size", str(args.batch_size), "--amp", args.amp, "--steps", str(args.steps),
            "--warmup", str(args.warmup), "--device", args.device]
    return argv + ["--grad_checkpoint"] * args.grad_checkpoint + ["--tiny"] * args.tiny + ["--compile"] * args.compile


def run_in_subprocess(recipe: str, args: argparse.Namespace) -> dict:
    """``measure_recipe`` in a fresh Python process (its own memory peak); its JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", recipe, *worker_argv(args)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark of {recipe} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if not lines:
        raise RuntimeError(f"benchmark of {recipe} printed no result line:\n{done.stdout[-2000:]}")
    return json.loads(lines[-1][len(RESULT_MARK):])


def cpu_model() -> str:
    """The processor's model name (Linux /proc/cpuinfo), else what ``platform`` knows."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_line(device: torch.device, load_before: float, load_after: float) -> str:
    """Device, software and how loaded the machine was (1-minute load average before and after the runs)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    return (f"Machine: {name} ({device.type}); {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads; "
            f"torch {torch.__version__}; 1-minute load average {load_before:.1f} before, {load_after:.1f} after.")


def _percent(value: float, base: float) -> str:
    return f"{100 * (value / base - 1):+.0f}%"


def _release_cells(result: dict, args: argparse.Namespace) -> list[str]:
    """Release s/step, ours/release time, release GiB, ours (whole process)/release memory."""
    setting = {k: getattr(args, k) for k in RELEASE_SETTING}
    setting["device"] = resolve_device(args.device).type
    if result["recipe"] not in RELEASE or setting != RELEASE_SETTING:
        return ["", "", "", ""]
    (low, high), gib = RELEASE[result["recipe"]]
    middle = (low + high) / 2
    release_time = f"{low:.1f}" if low == high else f"{low:.1f}-{high:.1f}"
    return [release_time, f"{result['s_per_step'] / middle:.2f}x", f"{gib:.1f}",
            f"{result['process_peak_bytes'] / GIB / gib:.2f}x"]


def format_table(results: list[dict], args: argparse.Namespace, machine: str) -> str:
    """Markdown: one row per recipe, SG-IHA's extra time and memory over its base recipe, release figures."""
    by_recipe = {r["recipe"]: r for r in results}
    device = resolve_device(args.device)
    memory = ("torch.cuda.max_memory_allocated" if device.type == "cuda"
              else f"most bytes torch's CPU allocator held at once (profiler allocation events), model "
                   f"construction and {MEMORY_STEPS} untimed steps")
    size = "tiny backbone (smoke test)" if args.tiny else "ViT-B/16, 384x128"
    lines = [
        machine, "",
        f"Setting: {size}, batch {args.batch_size}, amp {args.amp}, compile {'on' if args.compile else 'off'}, "
        f"activation checkpointing "
        f"{'on' if args.grad_checkpoint else 'off'}, Adam step included; median of {args.steps} timed steps after "
        f"{args.warmup} warm-up step(s). Peak memory: {memory}. Process peak: VmHWM of the whole process.", "",
        "| recipe | losses | parameters | s/step | range (s) | samples/s | peak memory (GiB) | process peak (GiB) "
        "| SG-IHA extra time | SG-IHA extra memory | release s/step | ours / release | release peak (GiB) "
        "| ours (process) / release |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        base = by_recipe.get(SGIHA_BASE.get(r["recipe"], ""))
        extra_time = _percent(r["s_per_step"], base["s_per_step"]) if base else ""
        extra_memory = _percent(r["peak_bytes"], base["peak_bytes"]) if base else ""
        cells = [r["recipe"], "+".join(r["losses"]), f"{r['params'] / 1e6:.1f} M", f"{r['s_per_step']:.3f}",
                 f"{min(r['step_times']):.3f}-{max(r['step_times']):.3f}",
                 f"{r['batch_size'] / r['s_per_step']:.2f}", f"{r['peak_bytes'] / GIB:.2f}",
                 f"{r['process_peak_bytes'] / GIB:.2f}", extra_time, extra_memory, *_release_cells(r, args)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES), help="recipes to run")
    parser.add_argument("--batch_size", type=int, default=4, help="training batch per step")
    parser.add_argument("--amp", choices=["none", "fp16", "bf16"], default="none", help="autocast precision")
    parser.add_argument("--grad_checkpoint", action="store_true", help="activation checkpointing (backbone, SG-IHA)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (warm-up steps compile it)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per recipe")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--out", type=Path, help="also write the markdown table to this file")
    parser.add_argument("--tiny", action="store_true", help="tiny backbone and classifier (smoke test)")
    parser.add_argument("--worker", choices=RECIPES, help=argparse.SUPPRESS)  # internal: one recipe, JSON out
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error(f"need --steps >= 1, --warmup >= 0, --batch_size >= 1; got {args.steps}, {args.warmup}, "
                     f"{args.batch_size}")
    return args


def main(argv: Sequence[str] | None = None) -> str:
    args = parse_args(argv)
    if args.worker:
        print(RESULT_MARK + json.dumps(measure_recipe(args.worker, args)), flush=True)
        return ""
    device = resolve_device(args.device)
    load_before = os.getloadavg()[0]
    results = []
    for recipe in args.recipes:
        results.append(run_in_subprocess(recipe, args))
        print(f"{recipe}: {results[-1]['s_per_step']:.3f} s/step", file=sys.stderr, flush=True)
    return publish(format_table(results, args, machine_line(device, load_before, os.getloadavg()[0])), args.out)


if __name__ == "__main__":
    main()
