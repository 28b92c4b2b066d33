"""Benchmark utils.metrics.retrieval_metrics against the usual implementation (full argsort + cumulative sums).

Synthetic similarities at the three benchmarks' test sizes (method §2), with their identity structure
(several images per identity, captions of each image as queries). Both implementations run on the same
matrix; the script checks that they agree and prints (or writes) a markdown table of time and peak extra
memory. CPU memory is the most torch's allocator held at once above what it held before the call, from its own
allocation events (bench/memory.py: the process's resident set would depend on what it freed earlier). CUDA
memory is torch.cuda.max_memory_allocated minus the memory allocated before.

    python bench/bench_metrics.py [--sizes icfg cuhk rstp] [--device cpu|cuda] [--out FILE.md] [--tiny]
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.memory import cpu_allocation_peak  # noqa: E402
from bench.report import publish  # noqa: E402
from utils.metrics import REPORTED_RANKS, retrieval_metrics  # noqa: E402

# name: (test queries = captions, gallery images, identities), method §2.
SIZES = {
    "icfg": ("ICFG-PEDES", 19_848, 19_848, 1_000),
    "cuhk": ("CUHK-PEDES", 6_156, 3_074, 1_000),
    "rstp": ("RSTPReid", 2_000, 1_000, 200),
}
TINY_DIVISOR = 50        # --tiny: every size divided by this (smoke test)
NOISE_STD = 0.1          # synthetic similarity: spread of every score
POSITIVE_SHIFT = 0.35    # synthetic similarity: mean extra score of a same-identity pair
QUERY_SPREAD = 0.1       # synthetic similarity: spread of that extra score between queries (hard and easy ones)
PAIR_SPREAD = 0.06       # synthetic similarity: spread of that extra score between the pairs of one query
TOLERANCE = 1e-3         # largest accepted difference between the two implementations, in percentage points
GENERATION_CHUNK = 1024  # query rows generated at a time (keeps set-up memory near the matrix itself)
SEED = 0                 # synthetic data seed
WARMUP_SIZE = (64, 32, 8)  # queries, gallery, identities of the untimed first run (lazy initialisation)
MIB = 2 ** 20


def synthetic_problem(num_queries: int, num_gallery: int, num_ids: int, device: torch.device,
                      seed: int = SEED) -> tuple[Tensor, Tensor, Tensor]:
    """Similarity [queries, gallery] and pids: every identity has images; query i describes image i % gallery."""
    generator = torch.Generator().manual_seed(seed)
    g_pids = (torch.arange(num_gallery) % num_ids)[torch.randperm(num_gallery, generator=generator)].to(device)
    q_pids = g_pids[torch.arange(num_queries, device=device) % num_gallery]
    similarity = torch.empty(num_queries, num_gallery, device=device)
    for start in range(0, num_queries, GENERATION_CHUNK):
        rows = slice(start, start + GENERATION_CHUNK)
        shape = similarity[rows].shape
        # Positives score higher by an amount that varies per query (difficulty) and per pair, so that they
        # spread over the ranking like a trained model's (mINP well below mAP, some last positives deep).
        signal = (POSITIVE_SHIFT + QUERY_SPREAD * torch.randn(shape[0], 1, generator=generator)
                  + PAIR_SPREAD * torch.randn(shape, generator=generator)).to(device)
        noise = torch.randn(shape, generator=generator).to(device) * NOISE_STD
        similarity[rows] = noise + signal * (q_pids[rows, None] == g_pids[None, :])
    return similarity, q_pids, g_pids


def usual_metrics(similarity: Tensor, q_pids: Tensor, g_pids: Tensor, max_rank: int = 10) -> dict[str, float]:
    """The usual implementation: argsort every row, then cumulative sums over the whole matrix (INP vectorised)."""
    order = torch.argsort(similarity, dim=1, descending=True)
    matches = g_pids[order] == q_pids[:, None]
    cumulative = matches.cumsum(1)
    cmc = (cumulative[:, :max_rank] > 0).double().mean(0) * 100
    num_rel = cumulative[:, -1]
    positions = torch.arange(1, similarity.shape[1] + 1, device=similarity.device)
    precision = cumulative / positions
    ap = (precision * matches).sum(1) / num_rel
    last = similarity.shape[1] - matches.flip(1).int().argmax(1)
    inp = num_rel / last
    result = {f"R{k}": float(cmc[k - 1]) for k in REPORTED_RANKS if k <= max_rank}
    result.update(mAP=float(ap.double().mean() * 100), mINP=float(inp.double().mean() * 100))
    return result


def measure(fn: Callable[[], dict], device: torch.device) -> tuple[dict, float, float]:
    """fn's result, wall time (s) and peak extra memory (MiB) on ``device``.

    On CPU the memory comes from a second call under the profiler, whose per-operation cost stays out of the time.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    if device.type == "cuda":
        return result, elapsed, (torch.cuda.max_memory_allocated(device) - before) / MIB
    with cpu_allocation_peak() as cpu_memory:
        fn()
    return result, elapsed, cpu_memory["peak_bytes"] / MIB


def bench_one(key: str, device: torch.device, tiny: bool) -> dict:
    """Time both implementations on one benchmark's size and check they agree."""
    name, num_queries, num_gallery, num_ids = SIZES[key]
    if tiny:
        num_queries, num_gallery, num_ids = (n // TINY_DIVISOR for n in (num_queries, num_gallery, num_ids))
    similarity, q_pids, g_pids = synthetic_problem(num_queries, num_gallery, num_ids, device)
    warmup = synthetic_problem(*WARMUP_SIZE, device)
    usual_metrics(*warmup)
    retrieval_metrics(*warmup)
    usual, usual_s, usual_mib = measure(lambda: usual_metrics(similarity, q_pids, g_pids), device)
    ours, ours_s, ours_mib = measure(lambda: retrieval_metrics(similarity, q_pids, g_pids), device)
    difference = max(abs(usual[k] - ours[k]) for k in usual)
    if set(usual) != set(ours) or difference > TOLERANCE:
        raise SystemExit(f"{name}: the implementations disagree: usual {usual}, ours {ours}")
    return dict(name=name, shape=f"{num_queries:,} x {num_gallery:,}", usual_s=usual_s, usual_mib=usual_mib,
                ours_s=ours_s, ours_mib=ours_mib, difference=difference, metrics=ours)


def markdown(rows: list[dict], device: torch.device) -> str:
    """The results as a markdown table, with the machine described."""
    memory = ("torch.cuda.max_memory_allocated" if device.type == "cuda"
              else "most bytes torch's CPU allocator held at once above what it held before the call")
    lines = [
        f"Device: {_device_name(device)}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads. "
        f"Peak extra memory: {memory}.",
        "",
        "| benchmark | queries x gallery | usual: time (s) | usual: peak extra (MiB) | ours: time (s) "
        "| ours: peak extra (MiB) | speed-up | memory ratio | max diff (points) | R1 / mAP / mINP |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r["metrics"]
        lines.append(
            f"| {r['name']} | {r['shape']} | {r['usual_s']:.2f} | {r['usual_mib']:,.0f} | {r['ours_s']:.2f} "
            f"| {r['ours_mib']:,.0f} | {r['usual_s'] / r['ours_s']:.1f}x "
            f"| {r['ours_mib'] / max(r['usual_mib'], 1):.3f} | {r['difference']:.1e} "
            f"| {m['R1']:.2f} / {m['mAP']:.2f} / {m['mINP']:.2f} |")
    return "\n".join(lines) + "\n"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        model = ""
    return model or platform.processor() or "CPU"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES),
                        help="benchmark test sizes to run")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", type=Path, help="also write the markdown table to this file")
    parser.add_argument("--tiny", action="store_true", help=f"sizes divided by {TINY_DIVISOR} (smoke test)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    return publish(markdown([bench_one(key, device, args.tiny) for key in args.sizes], device), args.out)


if __name__ == "__main__":
    main()
