"""Plan a training run before launching it: FLOPs, peak memory by kind, and what fits on which GPU (issue 17).

    python tools/plan_run.py --config_file configs/CUHK-PEDES/irra_sgiha.yaml [--key value ...]
        [--gpu A100-40GB H100-80GB ...] [--device cuda|cpu] [--json]

One training step of the config runs on fake tensors (no data, nothing allocated): FLOPs are torch's count,
memory the live tensor bytes op by op (processor/plan.py; method and validation: docs/benchmarks.md). Text
lengths come from the dataset's captions when root_dir holds it, else from a stated assumption.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from prettytable import PrettyTable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from processor.gpus import GPU_SPECS  # noqa: E402
from utils.cli import parse_first, run_cli  # noqa: E402


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_file", required=True, help="YAML config of the run")
    parser.add_argument("--gpu", nargs="+", default=list(GPU_SPECS), metavar="NAME",
                        help=f"GPUs to plan for (default all: {' '.join(GPU_SPECS)})")
    parser.add_argument("--device", choices=["cuda", "cpu"], help="device of the planned step (default: the "
                        "config's; auto plans the CUDA step)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    return parser.parse_known_args(argv)


parse_first(parse_args, __name__)  # --help and argument mistakes answer here, before torch loads

from processor.plan import GIB, KINDS, plan_run  # noqa: E402
from utils.config import load_config  # noqa: E402

MINUTE, HOUR = 60.0, 3600.0


def _in(seconds: float | None, unit: float) -> str:
    return "-" if seconds is None else f"{seconds / unit:.1f}"


def format_report(report: dict[str, Any]) -> str:
    """The plan as text: the step, its memory by kind, one row per GPU."""
    shapes = report["text_shapes"]
    lines = [
        f"step on {report['device']} (amp {report['amp']}, batch {report['batch_size']}, grad_checkpoint "
        f"{str(report['grad_checkpoint']).lower()}, losses {'+'.join(report['losses'])})",
        f"text: captions kept to {shapes['caption_length']} positions, answers {shapes['answer_length']}, "
        f"{shapes['mlm_masked']} MLM-masked positions per batch ({shapes['source']})",
        f"FLOPs: {report['flops_per_step'] / 1e12:.2f} TFLOP per step, {report['steps_per_epoch']} steps and "
        f"{report['flops_per_epoch'] / 1e15:.2f} PFLOP per epoch ({report['train_captions']} captions); "
        f"padding (fixed_shapes) adds {report['padding_flops_per_step'] / 1e12:.2f} TFLOP per step",
        f"peak memory: {report['peak_memory_bytes'] / GIB:.2f} GiB = "
        + " + ".join(f"{kind} {report['breakdown'][kind] / GIB:.2f}" for kind in KINDS),
    ]
    if report["gpus"]:
        table = PrettyTable(["GPU", "usable GiB", "fits", "max batch", "max batch (checkpointed)",
                             "epoch min (peak)", "run h (peak)",
                             "epoch min (estimate)", "run h (estimate)"])
        for name, row in report["gpus"].items():
            table.add_row([name, f"{row['usable_bytes'] / GIB:.1f}", "yes" if row["fits"] else "no",
                           row["max_batch_size"], row["max_batch_size_checkpointed"],
                           _in(row["epoch_seconds_lower_bound"], MINUTE), _in(row["run_seconds_lower_bound"], HOUR),
                           _in(row["epoch_seconds_estimate"], MINUTE), _in(row["run_seconds_estimate"], HOUR)])
        utilisation = next(iter(report["gpus"].values()))["utilisation"]
        lines += ["", f"GPUs (amp {report['gpu_amp']}; 'peak': a lower bound at the vendor's peak FLOP/s, "
                      f"'estimate': at {utilisation:.0%} of it; '-': precision not supported):", str(table)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args, overrides = parse_args(argv)
    cfg = load_config(args.config_file, overrides)
    device = args.device or ("cpu" if cfg.device == "cpu" else "cuda")
    report = plan_run(cfg, device, args.gpu)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return report


if __name__ == "__main__":
    run_cli(main)
