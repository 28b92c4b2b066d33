"""The predicted columns of docs/benchmarks.md's GPU table: each recipe's CUHK-PEDES config at the global batch of
64 (method §7) in fp32 / bf16 / fp16 AMP, without and with activation checkpointing, planned by processor/plan.py
as tools/plan_run.py plans it (captions as the dataset gives them, else as assumed). The measured columns stay
"not measured" until bench/gpu_suite.sh fills them on a GPU.

    python bench/plan_table.py [--recipes irra_sgiha ...] [--write_docs docs/benchmarks.md]

--write_docs writes the table between '<!-- bench/plan_table begin -->' and '<!-- bench/plan_table end -->';
tests/test_plan.py regenerates the IRRA + SG-IHA rows and compares them with that block.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.bench_train import RECIPES, bench_config  # noqa: E402
from processor.plan import GIB, caption_lengths, plan_step, published_train_counts, text_shapes  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.doc_blocks import read_block, write_block  # noqa: E402

BATCH_SIZE = 64  # method §7's global batch
PRECISIONS = {"none": "fp32", "bf16": "bf16 AMP", "fp16": "fp16 AMP"}  # amp setting -> its name in the table
DOCS_BLOCK = "bench/plan_table"
BREAKDOWN = ("weights", "gradients", "optimizer_state", "activations", "temporaries")  # the table's breakdown
HEADER = ["recipe", "batch (global)", "precision", "checkpointing", "TFLOP per step (predicted)",
          "peak memory GiB (predicted)", "at the peak: weights / gradients / Adam / activations / temporaries "
          "(GiB, predicted)", "peak memory (measured)", "s/step (measured)"]
NOT_MEASURED = "not measured"
# The suite's last setting: feature extraction, measured only (nothing to plan).
INFERENCE_ROW = ["feature extraction (retrieval model)", "256", "fp16 AMP", "-", "", "", "", "-",
                 "not measured (images/s, captions/s)"]


def predicted_row(recipe: str, amp: str, checkpointed: bool) -> list[str]:
    """One row: the recipe's planned step at BATCH_SIZE in ``amp``, with or without checkpointing."""
    cfg = bench_config(recipe, BATCH_SIZE, amp, checkpointed, tiny=False)
    lengths, source, _, num_classes = caption_lengths(cfg)
    if num_classes is None:
        num_classes = published_train_counts(cfg)[1]
    step = plan_step(cfg, num_classes, text_shapes(cfg, lengths, source), amp)
    return [recipe, str(BATCH_SIZE), PRECISIONS[amp], "yes" if checkpointed else "no", f"{step.flops / 1e12:.2f}",
            f"{step.peak_bytes / GIB:.1f}", " / ".join(f"{step.breakdown[k] / GIB:.2f}" for k in BREAKDOWN),
            NOT_MEASURED, NOT_MEASURED]


def table_rows(recipes: Sequence[str]) -> list[list[str]]:
    """Every recipe x precision x checkpointing row, in table order."""
    return [predicted_row(recipe, amp, checkpointed)
            for recipe in recipes for amp in PRECISIONS for checkpointed in (False, True)]


def markdown(rows: Sequence[Sequence[str]]) -> str:
    """The table in markdown, the feature-extraction row last."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in [*rows, INFERENCE_ROW]]) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=["irra_sgiha", "irra", "clip_finetune_sgiha",
                                                                         "clip_finetune"])
    parser.add_argument("--write_docs", metavar="FILE", help="also write the table into FILE's block (see above)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> str:
    args = parse_args(argv)
    if args.write_docs:
        read_block(args.write_docs, DOCS_BLOCK)  # a missing file or block answers before the planning
    table = markdown(table_rows(args.recipes))
    print(table)
    if args.write_docs:
        write_block(args.write_docs, DOCS_BLOCK, table)
    return table


if __name__ == "__main__":
    run_cli(main)
