"""Plan a training run before launching it: FLOPs, peak memory by kind, and what fits on which GPU (issue 17).

    python tools/plan_run.py --config_file configs/CUHK-PEDES/irra_sgiha.yaml [--key value ...]
        [--gpu A100-40GB H100-80GB ...] [--device cuda|cpu] [--json] [--write_docs docs/benchmarks.md]

One training step of the config runs on fake tensors (no data, nothing allocated): FLOPs are torch's count,
memory the live tensor bytes op by op (processor/plan.py; method and validation: docs/benchmarks.md). Text
lengths come from the dataset's captions when root_dir holds it, else from a stated assumption.

--write_docs FILE writes the plan (its command, summary and GPU table) into FILE between the lines
'<!-- plan_run:gpu_table begin -->' and '<!-- plan_run:gpu_table end -->' (another block: --docs_block NAME);
tests/test_plan.py regenerates every such block of docs/benchmarks.md and compares.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

from prettytable import PrettyTable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from processor.gpus import GPU_SPECS  # noqa: E402
from utils.cli import parse_first, run_cli  # noqa: E402

DOCS_BLOCK = "plan_run:gpu_table"  # the docs block --write_docs fills by default


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_file", required=True, help="YAML config of the run")
    parser.add_argument("--gpu", nargs="+", action="extend", metavar="NAME",
                        help=f"GPUs to plan for; may be repeated (default all: {' '.join(GPU_SPECS)})")
    parser.add_argument("--device", choices=["cuda", "cpu"], help="device of the planned step (default: the "
                        "config's; auto plans the CUDA step)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--write_docs", metavar="FILE", help="also write the plan into FILE's block (see above)")
    parser.add_argument("--docs_block", default=DOCS_BLOCK, metavar="NAME",
                        help=f"the block of --write_docs (default {DOCS_BLOCK}; names start with {DOCS_BLOCK})")
    args, overrides = parser.parse_known_args(argv)
    args.gpu = list(dict.fromkeys(args.gpu or GPU_SPECS))  # every GPU named, once each, in order
    if not args.docs_block.startswith(DOCS_BLOCK):
        parser.error(f"--docs_block {args.docs_block}: the name must start with {DOCS_BLOCK}")
    return args, overrides


parse_first(parse_args, __name__)  # --help and argument mistakes answer here, before torch loads

from processor.plan import GIB, KINDS, plan_run  # noqa: E402
from utils.config import load_config  # noqa: E402
from utils.doc_blocks import read_block, write_block  # noqa: E402

MINUTE, HOUR = 60.0, 3600.0


def _in(seconds: float | None, unit: float) -> str:
    return "-" if seconds is None else f"{seconds / unit:.1f}"


TABLE_HEADER = ["GPU", "usable GiB", "fits", "max batch", "max batch (checkpointed)", "epoch min (peak)",
                "run h (peak)", "epoch min (estimate)", "run h (estimate)"]


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The step, its text shapes, FLOPs and peak memory by kind, with why a kind is empty at the peak."""
    shapes = report["text_shapes"]
    return [
        f"step on {report['device']} (amp {report['amp']}, batch {report['batch_size']}, grad_checkpoint "
        f"{str(report['grad_checkpoint']).lower()}, losses {'+'.join(report['losses'])})",
        f"text: captions kept to {shapes['caption_length']} positions, answers {shapes['answer_length']}, "
        f"{shapes['mlm_masked']} MLM-masked positions per batch ({shapes['source']})",
        f"FLOPs: {report['flops_per_step'] / 1e12:.2f} TFLOP per step, {report['steps_per_epoch']} steps and "
        f"{report['flops_per_epoch'] / 1e15:.2f} PFLOP per epoch ({report['train_captions']} captions); "
        f"padding to fixed shapes {'adds' if report['fixed_shapes'] else 'would add (fixed_shapes true)'} "
        f"{report['padding_flops_per_step'] / 1e12:.2f} TFLOP per step",
        f"peak memory: {report['peak_memory_bytes'] / GIB:.2f} GiB = "
        + " + ".join(f"{kind} {report['breakdown'][kind] / GIB:.2f}" for kind in KINDS),
        f"the peak falls in the {report['peak_phase']}" + ("; none at the peak:" if report["zero_at_peak"] else ""),
        *(f"  {kind}: {why}" for kind, why in report["zero_at_peak"].items()),
    ]


def gpu_heading(report: dict[str, Any]) -> str:
    """What the GPU table's columns mean."""
    utilisation = next(iter(report["gpus"].values()))["utilisation"]
    return (f"GPUs (amp {report['gpu_amp']}; 'peak': a lower bound at the vendor's peak FLOP/s, 'estimate': at "
            f"{utilisation:.0%} of it; a run: {report['epochs']} epochs, where the config stops; '-': precision "
            f"not supported):")


def gpu_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row of TABLE_HEADER's columns per planned GPU."""
    return [[name, f"{row['usable_bytes'] / GIB:.1f}", "yes" if row["fits"] else "no", str(row["max_batch_size"]),
             str(row["max_batch_size_checkpointed"]), _in(row["epoch_seconds_lower_bound"], MINUTE),
             _in(row["run_seconds_lower_bound"], HOUR), _in(row["epoch_seconds_estimate"], MINUTE),
             _in(row["run_seconds_estimate"], HOUR)] for name, row in report["gpus"].items()]


def format_report(report: dict[str, Any]) -> str:
    """The plan as text: the step, its memory by kind, one row per GPU."""
    lines = summary_lines(report)
    if report["gpus"]:
        table = PrettyTable(TABLE_HEADER)
        table.add_rows(gpu_rows(report))
        lines += ["", gpu_heading(report), str(table)]
    return "\n".join(lines)


def command_line(args: argparse.Namespace, overrides: Sequence[str]) -> str:
    """The command that plans what ``args`` and ``overrides`` plan (without the docs options)."""
    words = ["--config_file", args.config_file]
    if args.gpu != list(GPU_SPECS):
        words += ["--gpu", *args.gpu]
    if args.device:
        words += ["--device", args.device]
    return shlex.join(["python", "tools/plan_run.py", *words, *overrides])


def docs_block(report: dict[str, Any], command: str) -> str:
    """The plan as a docs block: the command, the summary as the tool prints it, the GPU table in markdown."""
    lines = [f"`{command}` (written by the tool's `--write_docs`; a test compares it with the tool's output):",
             "", "```text", *summary_lines(report), "```"]
    if report["gpus"]:
        lines += ["", gpu_heading(report), "", "| " + " | ".join(TABLE_HEADER) + " |",
                  "|" + "---|" * len(TABLE_HEADER), *("| " + " | ".join(row) + " |" for row in gpu_rows(report))]
    return "\n".join(lines) + "\n"


def documented_command(path: str, block: str) -> list[str]:
    """The arguments of the command a docs block was written by (its first line, in backquotes)."""
    first = read_block(path, block).split("\n", 1)[0]
    return shlex.split(first.split("`")[1])[2:]  # without 'python tools/plan_run.py'


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args, overrides = parse_args(argv)
    cfg = load_config(args.config_file, overrides)
    if args.write_docs:
        read_block(args.write_docs, args.docs_block)  # a missing file or block answers before the planning
    device = args.device or ("cpu" if cfg.device == "cpu" else "cuda")
    report = plan_run(cfg, device, args.gpu)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    if args.write_docs:
        write_block(args.write_docs, args.docs_block, docs_block(report, command_line(args, overrides)))
        print(f"wrote the plan into {args.write_docs} (block {args.docs_block})")
    return report


if __name__ == "__main__":
    run_cli(main)
