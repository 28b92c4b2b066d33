"""Write a synthetic toy dataset in a benchmark's layout.

python tools/make_toy_dataset.py --root_dir R --dataset_name D [--num_train_ids N ...]

Sizes default to the ``toy`` section of configs/base.yaml.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.toy import make_toy_dataset  # noqa: E402
from utils.config import CHOICES, load_config  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    toy = load_config(None).toy
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root_dir", required=True, help="parent folder of <dataset_name>/")
    parser.add_argument("--dataset_name", required=True, choices=CHOICES["dataset_name"])
    for key in ("num_train_ids", "num_val_ids", "num_test_ids", "images_per_id", "seed"):
        parser.add_argument(f"--{key}", type=int, default=toy[key], help=f"default {toy[key]}")
    parser.add_argument("--image_size", type=int, nargs=2, default=toy.image_size, metavar=("H", "W"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = vars(parse_args(argv))
    path = make_toy_dataset(**args)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
