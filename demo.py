"""The CPU demo, one command on a fresh clone: ``bash run_demo.sh [--config_file CONFIG] [--key value ...]``.

Every check comes first (the demo config and its backbone recipe: keys, values, device, paths). Then: step 1/3
builds the demo's backbone when it is missing (processor/pretrain_build.py; its output goes to its log file),
step 2/3 generates the toy data when it is missing and fine-tunes with train.py, step 3/3 evaluates best.pth with
test.py and draws the grounding picture with tools/visualize_grounding.py. The last lines say where the run, its
results and the picture are, give the numbers beside the README's, and the next commands to try.
CONFIG is one of configs/demo*.yaml (default configs/demo_pretrained.yaml); ``--key value`` overrides any key,
the demo's own included (``--demo.toy.seed 3``).
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Sequence

from utils.cli import parse_first, run_cli

ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = "configs/demo_pretrained.yaml"


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_file", default=DEFAULT_CONFIG, help=f"a demo config (default {DEFAULT_CONFIG})")
    return parser.parse_known_args(argv)


parse_first(parse_args, __name__)  # --help and argument mistakes answer here, before torch loads

import train  # noqa: E402
from processor.demo import build_backbone, plan_demo, prepare_toy, summary  # noqa: E402
from tools import visualize_grounding  # noqa: E402
from utils.logger import setup_logger  # noqa: E402
from utils.runs import LAST_CHECKPOINT  # noqa: E402

logger = logging.getLogger("sgiha")


def _test_script() -> ModuleType:
    """test.py as a module (by path: the name 'test' is also a standard-library package)."""
    spec = importlib.util.spec_from_file_location("sgiha_test_entry", ROOT / "test.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the demo; returns the fine-tuned run's folder."""
    args, overrides = parse_args(argv)
    start = time.time()
    setup_logger(None)
    plan = plan_demo(args.config_file, overrides)
    build_backbone(plan)
    logger.info("step 2/3: fine-tuning %s", plan.config_file)
    prepare_toy(plan.cfg)
    run_dir = train.main(["--config_file", str(plan.config_file), *plan.train_overrides])
    logger.info("step 3/3: evaluating %s and drawing the grounding picture", run_dir)
    _test_script().main(["--config_file", str(run_dir)])
    picture, grounding = None, None
    if "aqa" in plan.cfg.losses:  # the picture shows SG-IHA's attention, its head as the last epoch left it
        picture = run_dir / visualize_grounding.OUT_NAME
        grounding = visualize_grounding.main(["--config_file", str(run_dir), "--checkpoint", LAST_CHECKPOINT,
                                              "--out", str(picture)])
    setup_logger(None)  # the summary on the console only, after the run's log files
    logger.info("%s", summary(plan, run_dir, picture, grounding, time.time() - start))
    return run_dir


if __name__ == "__main__":
    run_cli(main)
