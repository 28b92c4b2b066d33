"""Markdown table of test R1/R5/R10/mAP/mINP per run, and mean ± std over runs that differ only in seed.

    python tools/summarize_runs.py <run folder> [<run folder> ...] [--out summary.md]

Scores come from ``test_results.json`` (written by test.py) or, without it, from the test scores that
``metrics.jsonl`` logged at the epoch best.pth holds; the ``source`` column says which. Runs whose
configs.yaml are equal except for ``seed`` form a group; each group of two or more gets a row with the mean
and the sample standard deviation: seed noise of about 2 points is common on these benchmarks, larger than
many published gains, so compare methods by such means.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # project imports when run as tools/...py

from prettytable import PrettyTable, TableStyle  # noqa: E402

from utils.io import atomic_write_text  # noqa: E402
from utils.runs import (CONFIG_FILE, METRIC_KEYS, RunScores, check_run_dir, read_test_scores,  # noqa: E402
                        run_config, run_label, seed_groups, unique_labels)

DECIMALS = 2  # metrics are percentages, reported to 0.01 like the papers
MIN_GROUP = 2  # a standard deviation needs at least two runs


def _markdown(fields: list[str]) -> PrettyTable:
    table = PrettyTable(fields)
    table.set_style(TableStyle.MARKDOWN)
    table.align = "r"
    table.align[fields[0]] = "l"
    return table


def _seed(run_dir: Path) -> str:
    return str(run_config(run_dir).seed) if (run_dir / CONFIG_FILE).is_file() else "?"


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


def summarize(run_dirs: Sequence[Path]) -> str:
    """The markdown summary of ``run_dirs``: per-run table, then the seed-group table when there are groups."""
    labels = unique_labels(list(run_dirs))
    seeds = [_seed(d) for d in run_dirs]
    scores = [read_test_scores(d) for d in run_dirs]
    parts = ["Test split, text-to-image, percent.\n", runs_table(labels, seeds, scores)]
    grouped = groups_table([run_label(d) for d in run_dirs], seeds, scores, seed_groups(list(run_dirs)))
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
    text = summarize([check_run_dir(r) for r in args.runs])
    print(text, end="")
    if args.out:
        atomic_write_text(args.out, text)
    return text


if __name__ == "__main__":
    main()
