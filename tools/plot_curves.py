"""Training curves of one or more runs: every loss, the learning rate, and test (val dashed) R1 and mAP per epoch.

    python tools/plot_curves.py <run folder> [<run folder> ...] [--out curves.png] [--labels A B ...]

Several runs are overlaid, one colour each, labelled with their folder names without the timestamp (the
config's ``name``; full folder names when those clash), for ablations. Default output: ``<run>/curves.png``
for one run, ``curves.png`` in the current folder for several. A folder without a usable metrics.jsonl (not a
run, no epoch logged yet, a corrupt file) is skipped with a warning; no usable folder at all is an error.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # project imports when run as tools/...py

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from utils.cli import run_cli  # noqa: E402
from utils.logger import setup_warning_logger  # noqa: E402
from utils.runs import METRICS_FILE, RunError, check_run_dir, read_metrics, unique_labels, usable_runs  # noqa: E402

PANEL_COLUMNS = 3
PANEL_SIZE = (4.0, 3.0)  # inches (width, height) of one panel
DPI = 100  # pixels per inch: a panel is 400 x 300 pixels
TOTAL_LOSS = "loss"  # the sum of the weighted losses in metrics.jsonl
LOSS_SUFFIX = "_loss"
LR_KEY = "lr"
RETRIEVAL_KEYS = ("R1", "mAP")  # method §8 metrics worth a curve
EVAL_STYLES = {"test": ("-", "solid"), "val": ("--", "dashed")}  # line style per evaluated split, and its name
CURVES_FILE = "curves.png"  # default output name


def read_curves(run_dir: Path) -> list[dict[str, Any]]:
    """The metrics rows of a run folder; a RunError when it is no run or has logged no epoch yet."""
    rows = read_metrics(check_run_dir(run_dir))
    if not rows:
        raise RunError(f"{run_dir / METRICS_FILE}: no epoch logged yet")
    return rows


def _logged(runs: Sequence[list[dict[str, Any]]], key: str, splits: Sequence[str] = ("test",)) -> bool:
    """Whether any run logged a number for ``key`` (on any of ``splits``)."""
    return any(series(rows, key, split)[0] for rows in runs for split in splits)


def panel_keys(runs: Sequence[list[dict[str, Any]]]) -> list[str]:
    """Panels to draw: the total loss, each loss (first-seen order), lr, then R1 and mAP where evaluated."""
    losses: list[str] = []
    for rows in runs:
        for row in rows:
            losses += [k for k in row if k.endswith(LOSS_SUFFIX) and k not in losses]
    keys = [TOTAL_LOSS] if _logged(runs, TOTAL_LOSS) else []
    keys += losses + ([LR_KEY] if _logged(runs, LR_KEY) else [])
    return keys + [m for m in RETRIEVAL_KEYS if _logged(runs, m, list(EVAL_STYLES))]


def series(rows: list[dict[str, Any]], key: str, split: str = "test") -> tuple[list[int], list[float]]:
    """(epochs, values) of ``key``; retrieval metrics of splits other than test are nested under the split."""
    points = []
    for row in rows:
        source = row if split == "test" else row.get(split)
        if isinstance(source, dict) and isinstance(source.get(key), (int, float)):
            points.append((row["epoch"], float(source[key])))
    return [e for e, _ in points], [v for _, v in points]


def panel_title(key: str, splits: set[str]) -> str:
    """'R1 (%): test solid, val dashed' for retrieval panels, the key itself otherwise."""
    if key not in RETRIEVAL_KEYS:
        return key
    return f"{key} (%): " + ", ".join(f"{s} {EVAL_STYLES[s][1]}" for s in EVAL_STYLES if s in splits)


def figure_size(num_panels: int) -> tuple[float, float]:
    """Figure (width, height) in inches for ``num_panels`` panels laid out PANEL_COLUMNS per row."""
    rows = max(1, -(-num_panels // PANEL_COLUMNS))
    return PANEL_COLUMNS * PANEL_SIZE[0], rows * PANEL_SIZE[1]


def plot_runs(runs: Sequence[list[dict[str, Any]]], labels: Sequence[str], out: Path) -> Path:
    """Draw every panel with one line per run (dashed: val split) and save the PNG."""
    keys = panel_keys(runs)
    if not keys:
        raise RunError(f"nothing to plot: the {METRICS_FILE} files hold no loss, lr, R1 or mAP values")
    rows_count = max(1, -(-len(keys) // PANEL_COLUMNS))
    fig, axes = plt.subplots(rows_count, PANEL_COLUMNS, figsize=figure_size(len(keys)), dpi=DPI, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes.flat, keys):
        splits = EVAL_STYLES if key in RETRIEVAL_KEYS else {"test": EVAL_STYLES["test"]}
        drawn = set()
        for i, (rows, label) in enumerate(zip(runs, labels)):
            for split, (style, _) in splits.items():
                epochs, values = series(rows, key, split)
                if epochs:
                    drawn.add(split)
                    name = label if split == "test" else f"{label} ({split})"
                    ax.plot(epochs, values, style, marker=".", color=colors[i % len(colors)], label=name)
        ax.set_title(panel_title(key, drawn))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if key == LR_KEY:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders (holding metrics.jsonl)")
    parser.add_argument("--out", help="PNG to write (default: <run>/curves.png for one run, else curves.png)")
    parser.add_argument("--labels", nargs="+", help="legend names, one per run (default: the runs' names)")
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.runs):
        parser.error(f"--labels: {len(args.labels)} names for {len(args.runs)} runs")
    return args


def main(argv: Sequence[str] | None = None) -> Path:
    """Plot the usable runs (the others are skipped with a warning); returns the PNG written."""
    args = parse_args(argv)
    setup_warning_logger()
    usable = usable_runs(args.runs, read_curves)
    run_dirs = [Path(args.runs[i]) for i in usable]
    labels = [args.labels[i] for i in usable] if args.labels else unique_labels(run_dirs)
    out = Path(args.out) if args.out else (run_dirs[0] / CURVES_FILE if len(args.runs) == 1 else Path(CURVES_FILE))
    path = plot_runs(list(usable.values()), labels, out)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    run_cli(main)
