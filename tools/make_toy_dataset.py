"""Write a synthetic toy dataset in a benchmark's layout.

python tools/make_toy_dataset.py --root_dir R --dataset_name D [--num_train_ids N ...]

Sizes default to the demo's ``demo.toy`` section (configs/demo_base.yaml).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.toy import make_toy_dataset  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.config import CHOICES, load_config  # noqa: E402

COUNT_KEYS = ("num_train_ids", "num_val_ids", "num_test_ids", "images_per_id")
MIN_IMAGE_SIZE = (8, 4)  # (H, W) below which datasets/toy.py cannot place its background patches


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    toy = load_config(None, entry="demo").demo.toy
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root_dir", required=True, help="parent folder of <dataset_name>/")
    parser.add_argument("--dataset_name", required=True, choices=CHOICES["dataset_name"])
    for key in (*COUNT_KEYS, "seed"):
        parser.add_argument(f"--{key}", type=int, default=toy[key], help=f"default {toy[key]}")
    parser.add_argument("--image_size", type=int, nargs=2, default=toy.image_size, metavar=("H", "W"))
    args = parser.parse_args(argv)
    for key in COUNT_KEYS:
        if getattr(args, key) < 0:
            parser.error(f"--{key} {getattr(args, key)}: must be at least 0")
    if any(size < least for size, least in zip(args.image_size, MIN_IMAGE_SIZE)):
        parser.error(f"--image_size {args.image_size[0]} {args.image_size[1]}: must be at least "
                     f"{MIN_IMAGE_SIZE[0]} {MIN_IMAGE_SIZE[1]} (H W)")
    if Path(args.root_dir).exists() and not Path(args.root_dir).is_dir():
        parser.error(f"--root_dir {args.root_dir}: a file, not a folder")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = vars(parse_args(argv))
    path = make_toy_dataset(**args)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    run_cli(main)
