"""Where two or more runs differ: config, code, environment, data and weights, and the epoch their curves part.

    python tools/compare_runs.py RUN_A RUN_B [RUN_C ...] [--plot curves.png] [--threshold 1.0]

Prints, for run folders (``<output_dir>/<dataset>/<stamp>_<name>/``):

- the configs.yaml keys that differ, grouped by the sections of configs/base.yaml (experiment, data, backbone,
  objectives, SG-IHA, solver, evaluation); ``output_dir`` (where a run is written) is not a difference;
- the differences of run_info.json (train.py writes it when a run starts): code (commit, uncommitted changes),
  environment (package versions), machine and processes, precision (the resolved amp), data (the annotation's
  SHA-256 and split sizes) and weights (SHA-256); a run made before run_info.json existed is named as such;
- the per-epoch losses, lr, R1 and mAP of metrics.jsonl side by side, and the first epoch where the runs' test R1
  part by more than the seed spread of their experiments (runs whose configs differ only in ``seed``, grouped as
  tools/summarize_runs.py does); without seed repeats no spread is known: the first epoch where any logged value
  differs, and the first where R1 differs by more than ``--threshold`` points.

Seeds of one experiment are named as such ("seeds 42, 1 of experiment X"), not listed as a difference. When
nothing differs the report says "same". ``--plot FILE`` draws every run's curves in one picture
(tools/plot_curves.py).
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # project imports when run as tools/...py

from utils.cli import parse_first, run_cli  # noqa: E402

MIN_RUNS = 2
DEFAULT_THRESHOLD = 1.0  # R1 points: without seed repeats, the gap reported as "parted"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders (two or more)")
    parser.add_argument("--plot", help="also draw every run's curves into this PNG")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help="without seed repeats: the R1 gap in points reported as the runs parting "
                             f"(default {DEFAULT_THRESHOLD:g})")
    args = parser.parse_args(argv)
    if len(args.runs) < MIN_RUNS:
        parser.error(f"give at least {MIN_RUNS} run folders to compare")
    return args


parse_first(parse_args, __name__)  # --help and argument mistakes answer here, before torch loads

from prettytable import PrettyTable, TableStyle  # noqa: E402

from utils.config import BASE_CONFIG, Config  # noqa: E402
from utils.run_info import read_run_info  # noqa: E402
from utils.runs import (  # noqa: E402
    METRICS_FILE,
    NOT_EXPERIMENT_KEYS,
    SEED_KEY,
    RunError,
    check_run_dir,
    read_metrics,
    run_config,
    run_label,
    seed_groups,
)

LETTERS = 26  # runs named A..Z in the report, numbers after
MIN_SEEDS = 2  # a spread needs at least two seeds of one experiment
DECIMALS = 4  # losses and metrics in the side-by-side table
PART_METRIC = "R1"  # method §8: the score runs are compared by
CURVE_KEYS = ("loss", "lr", "R1", "mAP")  # besides every *_loss key, in this order
LOSS_SUFFIX = "_loss"
SECTION_LINE = re.compile(r"^# -+ (.+?) -+$")  # configs/base.yaml: '# ---------------- data ----------------'
TOP_KEY = re.compile(r"^([A-Za-z_]\w*):")
OTHER_SECTION = "other"  # keys base.yaml does not declare
# run_info.json fields that say where or when, not what: never a difference.
NOT_COMPARED = ("created", "cwd", "command", "seed", "code.repository", "code.diff_file", "data.annotation")
NOT_COMPARED_SUFFIX = ".path"  # weights.<role>.path: the SHA-256 beside it says whether the weights differ
INFO_SECTIONS = {"code": "code", "environment": "environment", "machine": "machine and processes",
                 "precision": "precision", "data": "data", "weights": "weights"}
NO_RUN_INFO = "no run_info.json (a run made before runs recorded it)"


@dataclass
class Run:
    """What the comparison reads of one run folder."""

    path: Path
    label: str
    config: Config
    info: dict[str, Any] | None  # run_info.json, None for older runs
    rows: list[dict[str, Any]]  # metrics.jsonl


@dataclass
class Comparison:
    """The differences found, by section: {section: {key: [value per run]}}; empty when the runs are the same."""

    config: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    info: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    missing_info: list[str] = field(default_factory=list)  # labels of runs without run_info.json
    experiments: list[list[int]] = field(default_factory=list)  # seed groups, indices into the runs
    text: str = ""

    @property
    def same(self) -> bool:
        return not self.config and not self.info and not self.missing_info


def config_sections(base: Path = BASE_CONFIG) -> dict[str, str]:
    """{top-level key: section} from configs/base.yaml's section comments ('backbone (method §3)' -> 'backbone')."""
    sections, current = {}, OTHER_SECTION
    for line in base.read_text(encoding="utf-8").splitlines():
        heading = SECTION_LINE.match(line)
        if heading:
            current = heading.group(1).split(" (")[0]
        elif TOP_KEY.match(line):
            sections[TOP_KEY.match(line).group(1)] = current
    return sections


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as {'a.b.c': value}; lists and scalars are values."""
    if not isinstance(data, dict):
        return {prefix.rstrip("."): data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) and value else
                    {f"{prefix}{key}": value})
    return flat


def differing(values: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """{key: [value per run]} of the keys whose values are not all equal (a missing key reads as None)."""
    keys = list(dict.fromkeys(k for flat in values for k in flat))
    found = {k: [flat.get(k) for flat in values] for k in keys}
    return {k: v for k, v in found.items() if any(x != v[0] for x in v)}


def config_differences(configs: Sequence[Config]) -> dict[str, dict[str, list[Any]]]:
    """Differing config keys by base.yaml section; the seed and ``output_dir`` are not compared."""
    sections = config_sections()
    flats = [{k: v for k, v in flatten(cfg.to_dict()).items() if k.split(".")[0] not in NOT_EXPERIMENT_KEYS}
             for cfg in configs]
    grouped: dict[str, dict[str, list[Any]]] = {}
    for key, values in differing(flats).items():
        grouped.setdefault(sections.get(key.split(".")[0], OTHER_SECTION), {})[key] = values
    return grouped


def _compared(key: str) -> bool:
    return not any(key == k or key.startswith(f"{k}.") for k in NOT_COMPARED) and not key.endswith(NOT_COMPARED_SUFFIX)


def info_differences(infos: Sequence[dict[str, Any]]) -> dict[str, dict[str, list[Any]]]:
    """Differing run_info.json fields, by section (code, environment, machine and processes, ...)."""
    flats = [{k: v for k, v in flatten(info).items() if _compared(k)} for info in infos]
    grouped: dict[str, dict[str, list[Any]]] = {}
    for key, values in differing(flats).items():
        top = key.split(".")[0]
        grouped.setdefault(INFO_SECTIONS.get(top, OTHER_SECTION), {})[key] = values
    return grouped


def read_run(path: Path, label: str) -> Run:
    """A run folder's config, run_info.json and metrics rows; a RunError when it is not a run folder."""
    check_run_dir(path)
    rows = read_metrics(path) if (path / METRICS_FILE).is_file() else []
    return Run(path, label, run_config(path), read_run_info(path), rows)


def _value(row: dict[str, Any] | None, key: str) -> float | None:
    value = row.get(key) if row else None
    return float(value) if isinstance(value, (int, float)) else None


def curve_keys(runs: Sequence[Run]) -> list[str]:
    """The columns of the side-by-side table: total loss, each loss (first-seen order), lr, R1, mAP."""
    losses = list(dict.fromkeys(k for run in runs for row in run.rows for k in row if k.endswith(LOSS_SUFFIX)))
    keys = [CURVE_KEYS[0], *losses, *CURVE_KEYS[1:]]
    return [k for k in keys if any(_value(row, k) is not None for run in runs for row in run.rows)]


def by_epoch(runs: Sequence[Run]) -> dict[int, list[dict[str, Any] | None]]:
    """{epoch: [that epoch's row of each run, or None]}, epochs in order."""
    indexed = [{row["epoch"]: row for row in run.rows} for run in runs]
    epochs = sorted({e for rows in indexed for e in rows})
    return {e: [rows.get(e) for rows in indexed] for e in epochs}


def curves_table(runs: Sequence[Run], keys: Sequence[str]) -> str:
    """One row per epoch, one column per key, each cell the runs' values 'A / B / ...' ('-': not logged)."""
    table = PrettyTable(["epoch", *keys])
    table.set_style(TableStyle.MARKDOWN)
    table.align = "r"
    for epoch, rows in by_epoch(runs).items():
        cells = []
        for key in keys:
            values = [_value(row, key) for row in rows]
            cells.append(" / ".join("-" if v is None else f"{v:.{DECIMALS}g}" for v in values))
        table.add_row([epoch, *cells])
    return table.get_string()


def parting(runs: Sequence[Run], experiments: Sequence[Sequence[int]], keys: Sequence[str],
            threshold: float) -> list[str]:
    """Where the runs' curves part: beyond the seed spread of their experiments when some experiment has seed
    repeats, else the first epoch with any difference and the first with an R1 gap above ``threshold``."""
    epochs = by_epoch(runs)
    scored = {e: [_value(r, PART_METRIC) for r in rows] for e, rows in epochs.items()}
    scored = {e: v for e, v in scored.items() if all(x is not None for x in v)}
    first_any = next((e for e, rows in epochs.items()
                      if any(len({_value(r, k) for r in rows}) > 1 for k in keys)), None)
    lines = [f"first epoch where any logged value differs: {first_any if first_any is not None else 'none'}"]
    repeated = [g for g in experiments if len(g) >= MIN_SEEDS]
    if repeated:
        return lines + _parting_beyond_spread(scored, experiments, repeated)
    first_gap = next((e for e, v in scored.items() if max(v) - min(v) > threshold), None)
    return lines + ["no seed spread is known (no experiment among these runs has two seeds; give seed repeats to "
                    "compare against it)",
                    f"first epoch where test {PART_METRIC} differs by more than {threshold:g} points: "
                    f"{first_gap if first_gap is not None else 'none'}"]


def _parting_beyond_spread(scored: dict[int, list[float]], experiments: Sequence[Sequence[int]],
                           repeated: Sequence[Sequence[int]]) -> list[str]:
    """The first epoch where the experiments' mean R1 differ by more than the widest seed range at that epoch."""
    lines = []
    first = None
    for epoch, values in scored.items():
        spread = max(max(values[i] for i in g) - min(values[i] for i in g) for g in repeated)
        means = [sum(values[i] for i in g) / len(g) for g in experiments]
        gap = max(means) - min(means)
        if first is None and len(experiments) > 1 and gap > spread:
            first = epoch
            lines.append(f"epoch {epoch}: the experiments' mean test {PART_METRIC} differ by {gap:.2f} points, more "
                         f"than the seed spread {spread:.2f} (range over seeds of one experiment)")
    if len(experiments) == 1:
        widest = max((max(v) - min(v) for v in scored.values()), default=0.0)
        lines.append(f"all runs are seeds of one experiment: their test {PART_METRIC} spread is at most "
                     f"{widest:.2f} points per epoch")
    elif first is None:
        lines.append(f"the experiments never part by more than their seed spread of test {PART_METRIC}")
    return lines


def _format(value: Any) -> str:
    return "-" if value is None else str(value)


def _differences_text(title: str, grouped: dict[str, dict[str, list[Any]]], labels: Sequence[str]) -> list[str]:
    if not grouped:
        return [f"{title}: same"]
    lines = [f"{title}:"]
    for section, keys in grouped.items():
        lines.append(f"  {section}:")
        for key, values in keys.items():
            lines.append(f"    {key}: " + " | ".join(f"{label} {_format(v)}" for label, v in zip(labels, values)))
    return lines


def experiment_names(runs: Sequence[Run], experiments: Sequence[Sequence[int]]) -> list[str]:
    """Each experiment's config ``name``, numbered ('demo #2') where experiments share one."""
    names = [runs[group[0]].config.name for group in experiments]
    return [f"{name} #{names[:i].count(name) + 1}" if names.count(name) > 1 else name for i, name in enumerate(names)]


def _seeds_text(runs: Sequence[Run], experiments: Sequence[Sequence[int]]) -> list[str]:
    lines = []
    for group, name in zip(experiments, experiment_names(runs, experiments)):
        seeds = ", ".join(str(runs[i].config.get(SEED_KEY)) for i in group)
        members = ", ".join(runs[i].label for i in group)
        lines.append(f"  {members}: {'seeds' if len(group) >= MIN_SEEDS else 'seed'} {seeds} of experiment {name}")
    return lines


def verdict(result: Comparison) -> str:
    """The report's summary line: same, different, or same as far as the runs recorded."""
    if result.same:
        return "same: nothing in config, code, environment, data or weights differs"
    if result.config or result.info:
        return "different: see above"
    return "same config; code, environment, data and weights are unknown for the runs without run_info.json"


def run_letters(count: int) -> list[str]:
    """Short names of the runs in the report: A, B, C, ... (then numbers)."""
    return [chr(ord("A") + i) if i < LETTERS else str(i + 1) for i in range(count)]


def compare(runs: Sequence[Run], threshold: float = DEFAULT_THRESHOLD) -> Comparison:
    """The differences of ``runs`` and the report text."""
    labels = [run.label for run in runs]
    result = Comparison(experiments=seed_groups([run.config for run in runs]))
    result.config = config_differences([run.config for run in runs])
    with_info = [i for i, run in enumerate(runs) if run.info is not None]
    result.missing_info = [runs[i].label for i in range(len(runs)) if i not in with_info]
    if len(with_info) >= MIN_RUNS:
        result.info = info_differences([runs[i].info for i in with_info])
    lines = ["runs:"]
    lines += [f"  {run.label}: {run_label(run.path)} ({run.path})"
              + (f"\n     command: {run.info['command']}" if run.info else "") for run in runs]
    lines += ["experiments (configs equal but for the seed):", *_seeds_text(runs, result.experiments)]
    lines += _differences_text("config (configs.yaml, by base.yaml section)", result.config, labels)
    for label in result.missing_info:
        lines.append(f"{label}: {NO_RUN_INFO}; its code, environment, data and weights cannot be compared")
    if len(with_info) >= MIN_RUNS:
        lines += _differences_text("code, environment, data and weights (run_info.json)", result.info,
                                   [labels[i] for i in with_info])
    lines.append(verdict(result))
    keys = curve_keys(runs)
    if keys:
        lines += ["", f"per epoch ({METRICS_FILE}; cells: {' / '.join(labels)}):", curves_table(runs, keys)]
        lines += parting(runs, result.experiments, keys, threshold)
    else:
        lines.append(f"no epoch logged in any {METRICS_FILE}")
    result.text = "\n".join(lines) + "\n"
    return result


def main(argv: Sequence[str] | None = None) -> Comparison:
    """Print the comparison (and draw --plot); returns it."""
    args = parse_args(argv)
    paths = [Path(p) for p in args.runs]
    for path in paths:
        check_run_dir(path)
    runs = [read_run(path, label) for path, label in zip(paths, run_letters(len(paths)))]
    result = compare(runs, args.threshold)
    print(result.text, end="")
    if args.plot:
        from tools.plot_curves import plot_runs

        usable = [run for run in runs if run.rows]
        if not usable:
            raise RunError(f"--plot {args.plot}: no run has logged an epoch in {METRICS_FILE}")
        print(f"wrote {plot_runs([run.rows for run in usable], [run.label for run in usable], Path(args.plot))}")
    return result


if __name__ == "__main__":
    run_cli(main)
