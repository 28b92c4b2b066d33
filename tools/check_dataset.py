"""Check a dataset before training: counts next to the published ones, then every problem found (datasets/doctor.py).

python tools/check_dataset.py --root_dir R --dataset_name D [--annotation_file F] [--text_length 77]
    [--phrase_backend pattern] [--workers N] [--json]
python tools/check_dataset.py --config_file C [any of the options above, which win over the config]

Exit status: 0 without errors (warnings allowed), 1 with errors, 2 when the dataset cannot be found.
Nothing in the dataset folder is written.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # project imports when run as tools/...py

from utils.cli import parse_first, run_cli  # noqa: E402
from utils.config import CHOICES, load_config  # noqa: E402
from utils.runs import config_file_arg  # noqa: E402


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_file", help="take dataset_name, root_dir, annotation_file, text_length and "
                                              "phrase_backend from this config (or run folder)")
    parser.add_argument("--root_dir", help="parent folder of <dataset_name>/ (custom: of the annotation file)")
    parser.add_argument("--dataset_name", choices=CHOICES["dataset_name"])
    parser.add_argument("--annotation_file", help="dataset_name custom: the annotation JSON (relative to root_dir)")
    parser.add_argument("--text_length", type=int, help="token length captions are cut to (default 77)")
    parser.add_argument("--phrase_backend", choices=CHOICES["phrase_backend"], help="default pattern")
    parser.add_argument("--workers", type=positive_int,
                        help="threads decoding images (default: min(8, CPU cores))")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    args = parser.parse_args(argv)
    if args.config_file is None and (args.root_dir is None or args.dataset_name is None):
        parser.error("give --root_dir and --dataset_name (or --config_file)")
    return args


parse_first(parse_args, __name__)  # --help and argument mistakes answer here, before torch loads

from datasets.doctor import diagnose, format_report  # noqa: E402

FINDINGS_EXIT = 1  # the exit status when the report holds errors
CONFIG_KEYS = ("dataset_name", "root_dir", "annotation_file", "text_length", "phrase_backend")  # options a config gives


def main(argv: Sequence[str] | None = None) -> int:
    """Print the report; returns the exit status."""
    args = parse_args(argv)
    # Progress and the phrase lookup's notes go to stderr, so that stdout holds only the report.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s: %(message)s")
    given = {key: getattr(args, key) for key in CONFIG_KEYS if getattr(args, key) is not None}
    config_file = config_file_arg(args.config_file) if args.config_file else None  # a run folder: its configs.yaml
    cfg = load_config(config_file, given)  # validates the values (e.g. text_length >= 2)
    report = diagnose(cfg.dataset_name, cfg.root_dir, cfg.annotation_file, text_length=cfg.text_length,
                      phrase_backend=cfg.phrase_backend, min_word_len=cfg.sgiha.min_word_len, workers=args.workers)
    print(json.dumps(report.to_dict(), indent=1) if args.json else format_report(report))
    return FINDINGS_EXIT if report.has_errors else 0


if __name__ == "__main__":
    run_cli(lambda: sys.exit(main()))
