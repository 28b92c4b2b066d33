"""The demo's own work around training (demo.py runs the steps): its config with the demo's keys
(configs/demo_base.yaml), every check before any work, its data and backbone, and the summary it ends with."""
from __future__ import annotations

import logging
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from datasets.bases import IMAGE_DIR, DatasetError
from datasets.toy import generate_once
from model.pretrained import check_file
from processor.pretrain_build import Build, build_pretrained, plan_build
from utils.config import Config, ConfigError, absolute_paths, load_config
from utils.precision import resolve_device
from utils.runs import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    METRIC_KEYS,
    METRICS_FILE,
    TEST_RESULTS_FILE,
    check_output_dir,
    read_metrics,
    selected_epoch,
)

logger = logging.getLogger("sgiha")

ENTRY = "demo"  # the config section the demo reads (utils/config.py ENTRY_SECTIONS)
EXPECTED_AT = ("seed", "threads", "epoch")  # demo.expected: what its scores are for, beside the metric names


@dataclass(frozen=True)
class DemoPlan:
    """A demo run whose every check passed: its config (with the demo's keys), the command-line overrides train.py
    takes (the demo's own removed) and the backbone build it needs first, if any."""

    config_file: Path
    cfg: Config
    train_overrides: list[str]
    build: Build | None


def split_overrides(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the ``--demo.*`` overrides, the others) of a ``--key value`` / ``--key=value`` list (checked by load_config)."""
    own: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(items):
        width = 1 if "=" in items[i] or i + 1 == len(items) else 2
        pair = list(items[i:i + width])
        (own if pair[0].lstrip("-").split(".")[0] == ENTRY else rest).extend(pair)
        i += width
    return own, rest


def _check_expected(cfg: Config, source: Path) -> None:
    for key, value in cfg.demo.expected.items():
        known = key in EXPECTED_AT or key in METRIC_KEYS
        if not known or isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: demo.expected.{key} = {value!r}: expected numbers for {list(EXPECTED_AT)} "
                              f"and the metrics {list(METRIC_KEYS)}")


def check_dataset(cfg: Config, source: str) -> None:
    """A DatasetError unless ``cfg``'s dataset is there or the demo may make it (root_dir = demo.toy.generate_in)."""
    target = Path(cfg.root_dir) / cfg.dataset_name
    if target.exists() or cfg.demo.toy.generate_in == cfg.root_dir:
        return
    where = (f"demo.toy.generate_in ({cfg.demo.toy.generate_in})" if cfg.demo.toy.generate_in
             else "demo.toy.generate_in, which this config leaves null")
    raise DatasetError(f"{source}: root_dir {cfg.root_dir} holds no {cfg.dataset_name} dataset, and the demo "
                       f"generates its toy data only in {where}; leave root_dir as the config has it")


def plan_demo(config_file: str | os.PathLike, overrides: Sequence[str]) -> DemoPlan:
    """Load and check both configs (the demo's and its backbone recipe's: keys, values, device, paths) before any
    work; raises the first mistake as a UserError."""
    config_file = Path(config_file)
    cfg = absolute_paths(load_config(config_file, overrides, entry=ENTRY))
    _check_expected(cfg, config_file)
    resolve_device(cfg.device)
    check_output_dir(cfg)
    check_dataset(cfg, str(config_file))
    build = plan_build(cfg)
    if build is not None:
        check_dataset(build.recipe_cfg, f"the backbone recipe {build.recipe}")
    elif cfg.pretrain_choice == "file" and cfg.pretrain_path:
        check_file(cfg.pretrain_path)
    return DemoPlan(config_file, cfg, split_overrides(overrides)[1], build)


def prepare_toy(cfg: Config) -> None:
    """Generate ``cfg``'s toy dataset when it is missing (check_dataset allowed it)."""
    target = Path(cfg.root_dir) / cfg.dataset_name
    if target.exists():
        return
    settings = {k: v for k, v in cfg.demo.toy.items() if k != "generate_in"}
    logger.info("generating the toy dataset %s (%s)", target, ", ".join(f"{k} {v}" for k, v in settings.items()))
    if not generate_once(cfg.root_dir, cfg.dataset_name, **settings):
        logger.info("%s was generated meanwhile by another command", target)


def build_backbone(plan: DemoPlan) -> None:
    """The demo's first step: its backbone (and the recipe's toy data) when the weights are missing."""
    if plan.build is None:
        logger.info("step 1/3: no backbone to build (%s)", plan.cfg.pretrain_path or "pretrain_choice "
                    + plan.cfg.pretrain_choice)
        return
    logger.info("step 1/3: building the demo backbone %s from %s, once (minutes on a CPU; later runs read it)",
                plan.build.weights, plan.build.recipe)
    prepare_toy(plan.build.recipe_cfg)
    build_pretrained(plan.build)


def prepare(config_file: str | os.PathLike, overrides: Sequence[str]) -> DemoPlan:
    """Check everything, then make what a demo config trains from: its backbone and its toy data (for bench/)."""
    plan = plan_demo(config_file, overrides)
    build_backbone(plan)
    prepare_toy(plan.cfg)
    return plan


def _scores(metrics: dict[str, Any]) -> str:
    return "  ".join(f"{k} {metrics[k]:.2f}" for k in METRIC_KEYS if k in metrics)


def _beside_readme(cfg: Config, rows: list[dict[str, Any]]) -> list[str]:
    """The run's test scores at the README's epoch (else its last), and the README's (demo.expected) below them."""
    expected = {k: v for k, v in cfg.demo.expected.items() if k in METRIC_KEYS}
    seed, threads, epoch = (cfg.demo.expected.get(k) for k in EXPECTED_AT)
    row = next((r for r in rows if r["epoch"] == epoch and "R1" in r), rows[-1])
    label = f"test, epoch {row['epoch']}:"
    lines = [f"  {label:<18}{_scores(row)}"]
    if expected:
        mine = (cfg.seed, torch.get_num_threads(), row["epoch"])
        differs = [f"{k} {m}" for k, m, theirs in zip(EXPECTED_AT, mine, (seed, threads, epoch)) if m != theirs]
        note = f"; this run has {', '.join(differs)}: expect other numbers" if differs else ""
        lines.append(f"  {'README:':<18}{_scores(expected)} (seed {seed}, {threads} threads, epoch {epoch}; another "
                     f"CPU gives another model, as another seed does{note})")
    return lines


def summary(plan: DemoPlan, run_dir: Path, picture: Path | None, grounding: dict | None, seconds: float) -> str:
    """The demo's last lines: where the run, its results and the picture are, its numbers beside the README's, and
    the next commands to try."""
    cfg, rows = plan.cfg, read_metrics(run_dir)
    last = rows[-1]
    best = selected_epoch(rows, cfg.select_on)
    run = shlex.quote(str(run_dir))
    lines = [f"demo finished in {seconds:.0f} s ({plan.config_file.name}, seed {cfg.seed}, "
             f"{torch.get_num_threads()} threads)",
             f"  run folder  {run_dir}",
             f"  results     {METRICS_FILE} (every epoch's losses and scores), {TEST_RESULTS_FILE} ({BEST_CHECKPOINT} "
             f"on test), {BEST_CHECKPOINT} (epoch {best['epoch'] if best else '-'}: best {cfg.select_on} Rank-1), "
             f"{LAST_CHECKPOINT} (epoch {last['epoch']}, resumable)"]
    if picture is not None:
        game = (f"; pointing game {100 * grounding['pointing_accuracy']:.1f}%, chance {100 * grounding['chance']:.1f}%"
                if grounding else "")
        lines.append(f"  picture     {picture} (SG-IHA's head at {LAST_CHECKPOINT}{game})")
    lines += _beside_readme(cfg, rows)
    gallery = shlex.quote(str(Path(cfg.root_dir) / cfg.dataset_name / IMAGE_DIR))
    lines += ["next:",
              f"  python test.py --config_file {run} --checkpoint {LAST_CHECKPOINT}  # evaluate the last epoch",
              f"  python tools/search.py --config_file {run} --gallery {gallery} --query \"The woman has long black "
              f"hair, is dressed in a red coat, is wearing blue jeans and walks in white shoes.\"  # the toy's "
              f"sentence pattern: a toy-trained model reads that one",
              f"  bash run_demo.sh --config_file {plan.config_file} --seed 1  # another seed, then compare the runs:",
              f"  python tools/summarize_runs.py {shlex.quote(str(run_dir.parent))}/*_{cfg.name}",
              f"  python tools/compare_runs.py {run} <the other run>  # what differs, and from which epoch"]
    return "\n".join(lines)
