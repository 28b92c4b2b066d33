"""Reading run folders: the config, the per-epoch metrics log and the test scores a training run left behind.

A run folder is ``<output_dir>/<dataset_name>/<YYYYmmdd_HHMMSS>_<name>/`` with ``configs.yaml``,
``metrics.jsonl`` (one JSON object per epoch), ``best.pth`` / ``last.pth`` and, after test.py,
``test_results.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from utils.config import Config, load_config
from utils.errors import UserError, one_line
from utils.io import check_output_folder

logger = logging.getLogger(__name__)

CONFIG_FILE = "configs.yaml"
METRICS_FILE = "metrics.jsonl"
TEST_RESULTS_FILE = "test_results.json"
METRIC_KEYS = ("R1", "R5", "R10", "mAP", "mINP")  # method §8: what every table and results file reports
BEST_CHECKPOINT = "best.pth"
LAST_CHECKPOINT = "last.pth"
RUN_MARKERS = (METRICS_FILE, BEST_CHECKPOINT, LAST_CHECKPOINT)  # a configs.yaml beside one of these is a run's
# The one rule for --checkpoint in test.py and the tools (their --help says it; so does the README).
CHECKPOINT_RULE = ("with a run's config, a file name alone (last.pth) names a file of the run folder; a path with a "
                   "folder (./x.pth, dir/x.pth, /abs/x.pth) is read as given")
SEED_KEY = "seed"
NOT_EXPERIMENT_KEYS = (SEED_KEY, "output_dir")  # runs that differ only in these are seeds of one experiment
# the timestamp prefix train.py gives every run folder
_STAMP = re.compile(r"^\d{8}_\d{6}_")
T = TypeVar("T")  # what a run reader returns


class RunError(UserError, ValueError):
    """A run folder, or one of its files, that does not look like a training run of this project."""


@dataclass(frozen=True)
class RunScores:
    """A run's test metrics (percent) and where they were read from."""

    metrics: dict[str, float]
    source: str  # 'test_results.json', or 'metrics.jsonl epoch N' when test.py has not been run


def check_output_dir(cfg: Config) -> None:
    """An error naming ``output_dir`` when no run folder can be made under it (a file stands in the way)."""
    check_output_folder(Path(cfg.output_dir) / cfg.dataset_name, f"output_dir = {cfg.output_dir}")


def new_run_dir(cfg: Config, suffix: str = "") -> Path:
    """A folder name no run has: <output_dir>/<dataset_name>/<YYYYmmdd_HHMMSS>_<name><suffix>[_N]."""
    check_output_dir(cfg)
    base = Path(cfg.output_dir) / cfg.dataset_name / f"{time.strftime('%Y%m%d_%H%M%S')}_{cfg.name}{suffix}"
    run_dir, n = base, 1
    while run_dir.exists():
        run_dir, n = base.with_name(f"{base.name}_{n}"), n + 1
    return run_dir


def claim_run_dir(cfg: Config) -> Path:
    """A new run folder, made at once: commands started in the same second each get their own (mkdir is atomic)."""
    while True:
        run_dir = new_run_dir(cfg)
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:  # another command took this name since new_run_dir looked
            continue


def check_run_dir(run_dir: str | os.PathLike) -> Path:
    """``run_dir`` as a Path, or a RunError saying what a run folder holds."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunError(f"{path}: not a folder (expected a run folder <output_dir>/<dataset>/<stamp>_<name>/)")
    if not (path / CONFIG_FILE).is_file() and not (path / METRICS_FILE).is_file():
        raise RunError(f"{path}: not a run folder (neither {CONFIG_FILE} nor {METRICS_FILE} is there)")
    return path


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """A tool's --config_file (a run folder or its configs.yaml) and --checkpoint (the rule above)."""
    parser.add_argument("--config_file", required=True, help="a run folder or its configs.yaml")
    parser.add_argument("--checkpoint", help=f"checkpoint (default: the run's {BEST_CHECKPOINT}; {CHECKPOINT_RULE})")


def config_file_arg(config_file: str | os.PathLike) -> Path:
    """A ``--config_file`` value as a YAML file: a folder stands for the configs.yaml train.py wrote into it."""
    path = Path(config_file)
    if not path.is_dir():
        return path
    if not (path / CONFIG_FILE).is_file():
        raise RunError(f"--config_file {path}: a folder without {CONFIG_FILE}; give a run folder "
                       f"(<output_dir>/<dataset>/<stamp>_<name>/, holding the {CONFIG_FILE} train.py wrote) or a "
                       f"YAML config file")
    return path / CONFIG_FILE


def run_dir_of(config_file: str | os.PathLike) -> Path | None:
    """The run folder (absolute) whose configs.yaml ``config_file`` is, or None for a config that is not a run's."""
    path = Path(config_file).absolute()
    if path.name == CONFIG_FILE and any((path.parent / marker).exists() for marker in RUN_MARKERS):
        return path.parent
    return None


def checkpoint_arg(checkpoint: str, run_dir: Path | None) -> Path:
    """A ``--checkpoint`` value as an absolute path, by CHECKPOINT_RULE; without a run folder, read as given."""
    path = Path(checkpoint)
    if run_dir is None or path.name != checkpoint:  # './x.pth'.name is 'x.pth': only a bare name is the run's
        return path.absolute()
    own = run_dir / checkpoint
    if not own.exists() and path.exists():  # never a silent switch between two files of one name
        raise RunError(f"--checkpoint {checkpoint}: not in the run folder {run_dir} ({CHECKPOINT_RULE}); for the "
                       f"file in the working directory write --checkpoint ./{checkpoint}")
    return own


def tool_checkpoint(config_file: Path, checkpoint: str | None) -> Path:
    """The checkpoint a tool loads: ``--checkpoint`` by CHECKPOINT_RULE, by default best.pth beside the config."""
    return checkpoint_arg(checkpoint, run_dir_of(config_file)) if checkpoint else default_checkpoint(config_file)


def _read_text(path: Path) -> str:
    """The UTF-8 text of a run file, or a RunError saying why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RunError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); the file is corrupt") from exc
    except OSError as exc:
        raise RunError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def run_config(run_dir: str | os.PathLike) -> Config:
    """The resolved configuration the run was trained with."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunError(f"{path}: not found (every run folder holds the {CONFIG_FILE} train.py wrote)")
    _read_text(path)  # load_config lets a non-UTF-8 file's UnicodeDecodeError through: a RunError here instead
    return load_config(path)


def default_checkpoint(config_file: str | os.PathLike) -> Path:
    """The run's best.pth, beside its configs.yaml."""
    return Path(config_file).resolve().parent / BEST_CHECKPOINT


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl``, one dict per epoch, in file order."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise RunError(f"{path}: not found (train.py writes it after the first epoch)")
    rows = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RunError(f"{path}: line {number} is not valid JSON ({exc})") from exc
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
            raise RunError(f"{path}: line {number} must be a JSON object with an integer 'epoch'")
        rows.append(row)
    return rows


def _check_scores(scores: Any, where: str) -> dict[str, float]:
    if not isinstance(scores, dict):
        raise RunError(f"{where}: expected a JSON object with keys {list(METRIC_KEYS)}")
    missing = [k for k in METRIC_KEYS if not isinstance(scores.get(k), (int, float))]
    if missing:
        raise RunError(f"{where}: missing or non-numeric {missing}; expected keys {list(METRIC_KEYS)}")
    return {k: float(scores[k]) for k in METRIC_KEYS}


def _split_scores(row: dict[str, Any], split: str) -> dict[str, Any] | None:
    """The metrics of ``split`` in one metrics row: test scores are flat, other splits nested."""
    if split == "test":
        return row if METRIC_KEYS[0] in row else None
    nested = row.get(split)
    return nested if isinstance(nested, dict) and METRIC_KEYS[0] in nested else None


def selected_epoch(rows: list[dict[str, Any]], select_on: str) -> dict[str, Any] | None:
    """The row of the epoch best.pth holds: highest Rank-1 on ``select_on``, earliest on ties."""
    scored = [row for row in rows if _split_scores(row, select_on) is not None]
    if not scored:
        return None
    return max(scored, key=lambda row: (_split_scores(row, select_on)[METRIC_KEYS[0]], -row["epoch"]))


def read_test_scores(run_dir: str | os.PathLike) -> RunScores:
    """Test metrics from ``test_results.json``; without it, the test scores logged at the best.pth epoch."""
    path = check_run_dir(run_dir)
    results = path / TEST_RESULTS_FILE
    if results.is_file():
        try:
            data = json.loads(_read_text(results))
        except json.JSONDecodeError as exc:
            raise RunError(f"{results}: not valid JSON ({exc})") from exc
        # test.py writes {"dataset", "split", "checkpoint", "epoch", "metrics": {...}}; older files hold the
        # metrics alone. Only this file is the run's score: test_results_<...>.json evaluate other data or weights.
        scores = data.get("metrics", data) if isinstance(data, dict) else data
        return RunScores(_check_scores(scores, str(results)), TEST_RESULTS_FILE)
    select_on = run_config(path).select_on if (path / CONFIG_FILE).is_file() else "test"
    row = selected_epoch(read_metrics(path), select_on)
    if row is None or _split_scores(row, "test") is None:
        raise RunError(f"{path}: no {TEST_RESULTS_FILE} and no evaluated test epoch in {METRICS_FILE}; "
                       f"run test.py --config_file {path / CONFIG_FILE}")
    return RunScores(_check_scores(row, f"{path / METRICS_FILE} epoch {row['epoch']}"),
                      f"{METRICS_FILE} epoch {row['epoch']}")


def run_label(run_dir: str | os.PathLike) -> str:
    """The run's folder name without train.py's timestamp prefix (the config's ``name``)."""
    name = Path(run_dir).resolve().name
    return _STAMP.sub("", name) or name


def unique_labels(run_dirs: list[Path]) -> list[str]:
    """Short labels (``run_label``) when they tell the runs apart, else the full folder names."""
    short = [run_label(d) for d in run_dirs]
    if len(set(short)) == len(short):
        return short
    return [Path(d).resolve().name for d in run_dirs]


def config_without_seed(cfg: Config) -> dict[str, Any]:
    """The configuration minus ``seed`` and the keys that only say where a run is written (``output_dir``):
    equal for runs that differ only in their seed."""
    data = cfg.to_dict()
    for key in NOT_EXPERIMENT_KEYS:
        data.pop(key, None)
    return data


def seed_groups(configs: Sequence[Config | None]) -> list[list[int]]:
    """Indices of the runs grouped by configuration-without-seed, in first-appearance order.

    Runs without a configuration (None: their folder lacks configs.yaml) form groups of their own.
    """
    groups: list[tuple[dict[str, Any] | None, list[int]]] = []
    for index, cfg in enumerate(configs):
        key = config_without_seed(cfg) if cfg is not None else None
        for group_key, members in groups:
            if key is not None and group_key == key:
                members.append(index)
                break
        else:
            groups.append((key, [index]))
    return [members for _, members in groups]


def usable_runs(run_dirs: Sequence[str | os.PathLike], read: Callable[[Path], T]) -> dict[int, T]:
    """``{position in run_dirs: read(folder)}`` of the folders ``read`` accepts, in order.

    A folder ``read`` rejects with a UserError (not a run, a file missing, corrupt or unreadable, nothing
    evaluated yet) is skipped with a warning naming it and why, so one unfinished run does not stop a summary
    of many. A RunError when no folder is left.
    """
    usable: dict[int, T] = {}
    for position, run_dir in enumerate(run_dirs):
        try:
            usable[position] = read(Path(run_dir))
        except UserError as exc:  # the reason, without the folder name when it starts with it
            logger.warning("skipping %s: %s", run_dir, one_line(exc).removeprefix(f"{run_dir}: "))
    if not usable:
        raise RunError(f"no usable run folder among the {len(run_dirs)} given ({', '.join(map(str, run_dirs))}); "
                       "the warnings above say what each one lacks")
    return usable
