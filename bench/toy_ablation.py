"""Toy ablation: the four recipes x seeds with the demo's config, mean +- std of test R1 / mAP, and the pointing
game of the SG-IHA recipes (tools/visualize_grounding.py). Toy numbers are not the method's benchmark numbers.

    python bench/toy_ablation.py [--config_file configs/demo.yaml] [--seeds 42 1 2 3 4] [--recipes clip_finetune ...]
        [--output_dir logs/toy_ablation] [--out docs/experiments/toy_ablation.md] [--key value ...]

Each run is ``train.py --config_file <demo config> --loss_names <recipe's losses> --seed <seed>`` plus the
extra ``--key value`` overrides, one after another in this process; first the demo makes what the config trains
from, when missing (processor/demo.py: the toy dataset in the demo's folder, configs/demo_pretrained.yaml's
weights). The markdown table names the command, the machine and the wall time.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # project imports when run as bench/...py

import torch  # noqa: E402

import train  # noqa: E402
from bench.report import publish  # noqa: E402
from processor.demo import prepare  # noqa: E402
from tools import visualize_grounding  # noqa: E402
from utils.config import CONFIG_DIR, load_config  # noqa: E402
from utils.runs import CONFIG_FILE, read_test_scores  # noqa: E402

DEMO = str(CONFIG_DIR / "demo.yaml")
RECIPES = ("clip_finetune", "clip_finetune_sgiha", "irra", "irra_sgiha")  # configs/<benchmark>/<recipe>.yaml
DEFAULT_SEEDS = (42, 1, 2, 3, 4)


def recipe_losses(recipe: str) -> str:
    """The recipe's loss_names, read from its CUHK-PEDES config (the same in every benchmark's folder)."""
    return load_config(str(CONFIG_DIR / "CUHK-PEDES" / f"{recipe}.yaml")).loss_names


def run_one(config_file: str, recipe: str, seed: int, output_dir: Path, extra: Sequence[str]) -> dict[str, float]:
    """Train one recipe and seed; its test R1 / mAP and, with SG-IHA, its pointing accuracy and chance."""
    argv = ["--config_file", config_file, "--loss_names", recipe_losses(recipe), "--seed", str(seed), "--name",
            f"toy_{recipe}", "--output_dir", str(output_dir / recipe), *extra]
    run_dir = train.main(argv)
    scores = read_test_scores(run_dir).metrics
    row = {"R1": scores["R1"], "mAP": scores["mAP"]}
    if "aqa" in recipe_losses(recipe):
        game = visualize_grounding.main(["--config_file", str(run_dir / CONFIG_FILE), "--json",
                                         "--out", str(run_dir / visualize_grounding.OUT_NAME)])
        row.update(pointing=100 * game["pointing_accuracy"], chance=100 * game["chance"])
    return row


def mean_std(values: list[float]) -> str:
    """'mean ± std' (sample std; 0 for one value)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {std:.2f}"


def format_table(rows: dict[str, list[dict[str, float]]], seeds: Sequence[int], command: str, wall_s: float,
                 load: tuple[float, float]) -> str:
    lines = [f"Command: `{command}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads; 1-minute load average {load[0]:.1f} before, {load[1]:.1f} after. "
             f"Wall time {wall_s / 60:.1f} min for {sum(len(r) for r in rows.values())} runs (seeds "
             f"{', '.join(map(str, seeds))}).", "",
             "| recipe | losses | runs | test R1 | test mAP | pointing accuracy % (chance %) |",
             "|---|---|---|---|---|---|"]
    for recipe, runs in rows.items():
        pointing = "-"
        if runs and "pointing" in runs[0]:
            pointing = f"{mean_std([r['pointing'] for r in runs])} ({statistics.fmean(r['chance'] for r in runs):.1f})"
        lines.append(f"| {recipe} | {recipe_losses(recipe)} | {len(runs)} | {mean_std([r['R1'] for r in runs])} | "
                     f"{mean_std([r['mAP'] for r in runs])} | {pointing} |")
    lines += ["", "Mean ± sample std over the seeds. Toy numbers: a tiny CLIP on generated pictures, not the method's "
              "benchmark numbers."]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_file", default=DEMO, help="the demo config every run starts from (default "
                                                            "configs/demo.yaml, from scratch)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES))
    parser.add_argument("--output_dir", default="logs/toy_ablation", help="parent of the runs' folders")
    parser.add_argument("--out", type=Path, help="also write the markdown table to this file")
    return parser.parse_known_args(argv)


def main(argv: Sequence[str] | None = None) -> str:
    args, extra = parse_args(argv)
    command = shlex.join(["python", "bench/toy_ablation.py", *(sys.argv[1:] if argv is None else argv)])
    load_before, start = os.getloadavg()[0], time.monotonic()
    prepare(args.config_file, extra)
    rows = {recipe: [run_one(args.config_file, recipe, seed, Path(args.output_dir), extra) for seed in args.seeds]
            for recipe in args.recipes}
    table = format_table(rows, args.seeds, command, time.monotonic() - start, (load_before, os.getloadavg()[0]))
    return publish(table, args.out)


if __name__ == "__main__":
    main()
