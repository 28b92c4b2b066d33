"""Markdown table of test R1/R5/R10/mAP/mINP per run, and mean ± std over runs that differ only in seed.

    python tools/summarize_runs.py <run folder> [<run folder> ...] [--out summary.md]

Scores come from the run's own ``test_results.json`` (written by test.py; evaluations on other datasets or
checkpoints, ``test_results_<...>.json``, are not read) or, without it, from the test scores that
``metrics.jsonl`` logged at the epoch best.pth holds; the ``source`` column says which. Runs whose
configs.yaml are equal except for ``seed`` form a group; each group of two or more gets a row with the mean
and the sample standard deviation: seed noise of about 2 points is common on these benchmarks, larger than
many published gains, so compare methods by such means. A folder without test scores (not a run, nothing
evaluated yet, a corrupt file) is skipped with a warning; no usable folder at all is an error.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # project imports when run as tools/...py

from prettytable import PrettyTable, TableStyle  # noqa: E402

from utils.cli import run_cli  # noqa: E402
from utils.config import Config  # noqa: E402
from utils.io import atomic_write_text  # noqa: E402
from utils.logger import setup_warning_logger  # noqa: E402
from utils.runs import (  # noqa: E402
    CONFIG_FILE,
    METRIC_KEYS,
    RunScores,
    read_test_scores,
    run_config,
    run_label,
    seed_groups,
    unique_labels,
    usable_runs,
)

DECIMALS = 2  # metrics are percentages, reported to 0.01 like the papers
MIN_GROUP = 2  # a standard deviation needs at least two runs
UNKNOWN_SEED = "?"  # seed cell of a run folder without configs.yaml


@dataclass(frozen=True)
class SummarizedRun:
    """What the summary needs of one run: its test scores and its configuration (None without configs.yaml)."""

    scores: RunScores
    config: Config | None


def read_run(run_dir: Path) -> SummarizedRun:
    """The run's test scores and configuration; a UserError when the folder has no usable test scores."""
    scores = read_test_scores(run_dir)
    return SummarizedRun(scores, run_config(run_dir) if (run_dir / CONFIG_FILE).is_file() else None)


def _markdown(fields: list[str]) -> PrettyTable:
    table = PrettyTable(fields)
    table.set_style(TableStyle.MARKDOWN)
    table.align = "r"
    table.align[fields[0]] = "l"
    return table


def runs_table(labels: Sequence[str], seeds: Sequence[str], scores: Sequence[RunScores]) -> str:
    """One row per run: label, seed, the five metrics and where they were read."""
    table = _markdown(["run", "seed", *METRIC_KEYS, "source"])
    table.align["source"] = "l"
    for label, seed, score in zip(labels, seeds, scores):
        table.add_row([label, seed, *(f"{score.metrics[k]:.{DECIMALS}f}" for k in METRIC_KEYS), score.source])
    return table.get_string()


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator)."""
    return statistics.mean(values), statistics.stdev(values)


def groups_table(names: Sequence[str], seeds: Sequence[str], scores: Sequence[RunScores],
                 groups: Sequence[Sequence[int]]) -> str | None:
    """One row per seed group of at least MIN_GROUP runs (named by their configs' names): 'mean ± std' of each
    metric; None if there is no such group."""
    table = _markdown(["runs (same config, other seeds)", "seeds", "n", *METRIC_KEYS])
    for members in groups:
        if len(members) < MIN_GROUP:
            continue
        cells = []
        for key in METRIC_KEYS:
            mean, std = mean_std([scores[i].metrics[key] for i in members])
            cells.append(f"{mean:.{DECIMALS}f} ± {std:.{DECIMALS}f}")
        label = ", ".join(sorted({names[i] for i in members}))
        table.add_row([label, ", ".join(seeds[i] for i in members), len(members), *cells])
    return table.get_string() if table.rows else None


def summarize(run_dirs: Sequence[str | os.PathLike]) -> str:
    """The markdown summary of the usable folders among ``run_dirs`` (the others are skipped with a warning):
    per-run table, then the seed-group table when there are groups."""
    usable = usable_runs(run_dirs, read_run)
    paths = [Path(run_dirs[i]) for i in usable]
    runs = list(usable.values())
    seeds = [str(r.config.seed) if r.config is not None else UNKNOWN_SEED for r in runs]
    scores = [r.scores for r in runs]
    parts = ["Test split, text-to-image, percent.\n", runs_table(unique_labels(paths), seeds, scores)]
    grouped = groups_table([run_label(p) for p in paths], seeds, scores, seed_groups([r.config for r in runs]))
    if grouped:
        parts += ["\nRuns that differ only in seed: mean ± sample standard deviation.\n", grouped]
    return "\n".join(parts) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders")
    parser.add_argument("--out", help="also write the markdown to this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> str:
    """Print (and optionally write) the summary; returns the markdown."""
    args = parse_args(argv)
    setup_warning_logger()
    text = summarize(args.runs)
    print(text, end="")
    if args.out:
        atomic_write_text(args.out, text)
    return text


if __name__ == "__main__":
    run_cli(main)
