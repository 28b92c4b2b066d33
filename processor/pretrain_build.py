"""Build a missing ``pretrain_path`` once by training ``pretrain_build.config_file`` and exporting its last checkpoint.

The CPU demo fine-tunes a tiny CLIP that no package ships (docs/demo.md point 15): like a download of OpenAI's
weights, its first run makes the weights it starts from, and later runs read them. The build is the three commands
of configs/demo_pretrained.yaml's header, run as child processes (train.py, then tools/export_open_clip.py), so it
gives the same file as those commands and leaves the parent's state untouched.
"""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from model.open_clip_format import WEIGHTS_FILE
from utils.config import Config
from utils.errors import UserError
from utils.runs import LAST_CHECKPOINT

logger = logging.getLogger("sgiha")

ROOT = Path(__file__).resolve().parent.parent  # the repository: train.py and tools/ live there
BUILD_RUNS = "build_runs"  # folder beside the weights that keeps the build's training runs


class PretrainBuildError(UserError, RuntimeError):
    """The build of pretrain_path could not start or did not finish."""


def needs_build(cfg: Config) -> bool:
    """Whether ``cfg`` names a build for its weights file and that file is still missing."""
    return bool(cfg.pretrain_choice == "file" and cfg.pretrain_build.config_file
                and not Path(cfg.pretrain_path).is_file())


def build_commands(cfg: Config) -> str:
    """The commands that build ``cfg.pretrain_path`` by hand (from the repository root)."""
    out = Path(cfg.pretrain_path).parent
    half = " --half" if cfg.pretrain_build.half else ""
    return (f"python train.py --config_file {cfg.pretrain_build.config_file} --output_dir {out / BUILD_RUNS}; "
            f"python tools/export_open_clip.py --config_file <that run> --checkpoint <that run>/{LAST_CHECKPOINT} "
            f"--out {out}{half}")


def _run(args: list[str], what: str, cfg: Config) -> None:
    result = subprocess.run([sys.executable, *args])  # in this working directory: the recipe's paths are relative
    if result.returncode != 0:
        raise PretrainBuildError(f"pretrain_build: {what} failed (exit {result.returncode}), so pretrain_path "
                                 f"{cfg.pretrain_path} was not made; its output is above; by hand: "
                                 f"{build_commands(cfg)}")


def _new_run(runs: Path, before: set[Path]) -> Path:
    made = sorted(p for p in runs.glob("*/*") if p.is_dir() and p not in before)
    if len(made) != 1:
        raise PretrainBuildError(f"pretrain_build: expected one new run folder under {runs}, found {len(made)}")
    return made[0]


def build_pretrained(cfg: Config) -> None:
    """Train ``cfg.pretrain_build.config_file`` and export its last checkpoint to ``cfg.pretrain_path``."""
    weights = Path(cfg.pretrain_path)
    if weights.name != WEIGHTS_FILE:  # the name the export writes
        raise PretrainBuildError(f"pretrain_path {weights}: pretrain_build writes {WEIGHTS_FILE}; name that file "
                                 f"(e.g. {weights.parent / WEIGHTS_FILE})")
    recipe = Path(cfg.pretrain_build.config_file)
    if not recipe.is_file():
        raise PretrainBuildError(f"pretrain_build.config_file {recipe}: no such file, so the missing pretrain_path "
                                 f"{weights} cannot be built (relative paths are read from the working directory: "
                                 f"start from the repository root)")
    runs = weights.parent / BUILD_RUNS
    before = {p for p in runs.glob("*/*") if p.is_dir()}
    logger.info("pretrain_path %s not found: building it once with %s (the weights this config starts from; "
                "minutes on a CPU, see docs/demo.md points 15-16)", weights, recipe)
    _run([str(ROOT / "train.py"), "--config_file", str(recipe), "--output_dir", str(runs)], "training", cfg)
    run = _new_run(runs, before)
    export = [str(ROOT / "tools" / "export_open_clip.py"), "--config_file", str(run), "--checkpoint",
              str(run / LAST_CHECKPOINT), "--out", str(weights.parent)]
    _run(export + (["--half"] if cfg.pretrain_build.half else []), "the export", cfg)
    logger.info("built %s from %s", weights, run / LAST_CHECKPOINT)
