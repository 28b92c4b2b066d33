"""Build the demo's missing ``pretrain_path`` once: train ``demo.pretrain_build.config_file``, export its last.pth.

The CPU demo fine-tunes a tiny CLIP that no package ships (docs/experiments/demo.md point 15): like a download
of OpenAI's weights, the demo's first run makes the weights it starts from, and later runs read them. The build is
the commands of configs/demo_pretrained.yaml's header, run as child processes (train.py, then
tools/export_open_clip.py) whose output goes to the build's log file, so it gives the same file as those commands
and leaves this process untouched.

Several commands may need the weights at once, and any of them may be killed. The build holds a lock beside the
weights (a second command waits for it, saying so), trains into a fresh folder of its own under ``build_runs/`` (the
one run in it is the build's, whatever else lies there), exports into that folder and moves the weights into place
last, in one rename: a killed build leaves no weights file, only a folder the next build removes.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from model.open_clip_format import WEIGHTS_FILE
from utils.config import Config, ConfigError, absolute_paths, load_config
from utils.errors import UserError, one_line
from utils.io import check_output_folder
from utils.lock import exclusive
from utils.precision import resolve_device
from utils.runs import LAST_CHECKPOINT

logger = logging.getLogger("sgiha")

ROOT = Path(__file__).resolve().parent.parent  # the repository: train.py and tools/ live there
BUILD_RUNS = "build_runs"  # folder beside the weights that keeps the builds' training runs
LOCK_FILE = ".build.lock"  # beside the weights: held by the command that builds them
BUILD_LOG = "build.log"  # in the build's folder: the output of its training and export
EXPORT_DIR = "export"  # in the build's folder: the export, before its files move beside pretrain_path
QUIET_CHILD = {"TQDM_DISABLE": "1"}  # no progress bars in the build's log file


class PretrainBuildError(UserError, RuntimeError):
    """The build of pretrain_path could not start or did not finish."""


@dataclass(frozen=True)
class Build:
    """A checked build: the weights it makes and the recipe config (loaded with the demo's keys) that trains them."""

    weights: Path
    recipe: Path
    recipe_cfg: Config
    half: bool


def needs_build(cfg: Config) -> bool:
    """Whether ``cfg`` (loaded with the demo's keys) names a build for its weights file and that file is missing."""
    return bool(cfg.pretrain_choice == "file" and cfg.demo.pretrain_build.config_file
                and not Path(cfg.pretrain_path).is_file())


def build_commands(cfg: Config) -> str:
    """The commands that build ``cfg.pretrain_path`` by hand (from the repository root), as the config's header."""
    out = Path(cfg.pretrain_path).parent
    half = " --half" if cfg.demo.pretrain_build.half else ""
    return (f"out={out / BUILD_RUNS}/by_hand_$(date +%Y%m%d_%H%M%S); python train.py --config_file "
            f"{cfg.demo.pretrain_build.config_file} --output_dir $out; run=$(echo $out/*/*); python "
            f"tools/export_open_clip.py --config_file $run --checkpoint $run/{LAST_CHECKPOINT} --out {out}{half}")


def unbuilt_error(config_file: str | os.PathLike, overrides: Sequence[str]) -> PretrainBuildError | None:
    """For a demo config whose weights are not built yet, the error that says how to build them; else None."""
    cfg = absolute_paths(load_config(config_file, overrides, entry="demo"))
    if not needs_build(cfg):
        return None
    return PretrainBuildError(f"pretrain_path {cfg.pretrain_path}: not built yet; the demo builds it on its first run "
                              f"(bash run_demo.sh --config_file {config_file}), or by hand: {build_commands(cfg)}")


def plan_build(cfg: Config) -> Build | None:
    """The build of ``cfg``'s missing pretrain_path with every check made before any work (the weights' name and
    folder, the recipe's keys, values and device); None when there is nothing to build."""
    if not needs_build(cfg):
        return None
    weights = Path(cfg.pretrain_path)
    if weights.name != WEIGHTS_FILE:  # the name the export writes
        raise PretrainBuildError(f"pretrain_path {weights}: demo.pretrain_build writes {WEIGHTS_FILE}; name that "
                                 f"file (e.g. {weights.parent / WEIGHTS_FILE})")
    check_output_folder(weights.parent, f"pretrain_path {weights}")
    recipe = Path(cfg.demo.pretrain_build.config_file)
    if not recipe.is_file():
        raise PretrainBuildError(f"demo.pretrain_build.config_file {recipe}: no such file, so the missing "
                                 f"pretrain_path {weights} cannot be built (relative paths are read from the working "
                                 f"directory: start from the repository root)")
    try:
        recipe_cfg = absolute_paths(load_config(recipe, entry="demo"))
        resolve_device(recipe_cfg.device)
    except ConfigError as exc:
        raise PretrainBuildError(f"the backbone recipe {recipe} (demo.pretrain_build.config_file): {one_line(exc)}"
                                 ) from exc
    return Build(weights, recipe, recipe_cfg, cfg.demo.pretrain_build.half)


def _run(args: list[str], log: Path, what: str, build: Build) -> None:
    """Run ``python args`` in this working directory (the recipe's relative paths are read from it) into ``log``."""
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"$ python {' '.join(args)}\n")
        out.flush()
        result = subprocess.run([sys.executable, *args], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **QUIET_CHILD})
    if result.returncode != 0:
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        raise PretrainBuildError(f"the demo backbone's build failed: {what} exited with {result.returncode}, so "
                                 f"{build.weights} was not made; the end of its log {log}: {lines[-1] if lines else ''}"
                                 f"; run the demo again to build anew")


def _only_run(folder: Path) -> Path:
    runs = [p for p in folder.glob("*/*") if p.is_dir()]  # <output_dir>/<dataset_name>/<run>: the fresh folder's one
    if len(runs) != 1 or not (runs[0] / LAST_CHECKPOINT).is_file():
        raise PretrainBuildError(f"the demo backbone's build: expected one finished run under {folder}, found "
                                 f"{[str(p) for p in runs]}")
    return runs[0]


def _remove_earlier_builds(runs: Path) -> None:
    """Called under the lock with the weights missing: every folder there is a build that never installed them."""
    for stale in sorted(runs.iterdir()) if runs.is_dir() else []:
        shutil.rmtree(stale, ignore_errors=True)
        logger.info("removed %s: an earlier build that did not finish", stale)


def _install(export: Path, weights: Path) -> None:
    """Move the export's files beside ``weights``, the weights file last: its presence means the build is done."""
    for file in sorted(export.iterdir(), key=lambda p: p.name == WEIGHTS_FILE):
        os.replace(file, weights.parent / file.name)
    export.rmdir()


def build_pretrained(build: Build) -> bool:
    """Make ``build.weights`` unless another command made them while this one waited; returns whether it built."""
    runs = build.weights.parent / BUILD_RUNS
    work = runs / f"{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}"
    log = work / BUILD_LOG
    with exclusive(build.weights.parent / LOCK_FILE, f"building {build.weights} from {build.recipe}, log {log}"):
        if build.weights.is_file():
            logger.info("the demo backbone %s was built by the command this one waited for", build.weights)
            return False
        _remove_earlier_builds(runs)
        work.mkdir(parents=True)
        logger.info("training %s in %s; its output goes to %s", build.recipe, work, log)
        _run([str(ROOT / "train.py"), "--config_file", str(build.recipe), "--output_dir", str(work)], log,
             "training", build)
        run = _only_run(work)
        _run([str(ROOT / "tools" / "export_open_clip.py"), "--config_file", str(run), "--checkpoint",
              str(run / LAST_CHECKPOINT), "--out", str(work / EXPORT_DIR), *(["--half"] if build.half else [])],
             log, "the export", build)
        _install(work / EXPORT_DIR, build.weights)
    logger.info("built the demo backbone %s from %s (log %s)", build.weights, run / LAST_CHECKPOINT, log)
    return True
