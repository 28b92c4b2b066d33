"""Cache the attribute phrases of a dataset ahead of training, in the annotation's phrase copy.

    python tools/extract_phrases.py --root_dir R --dataset_name D [--annotation_file F] [--phrase_backend pattern]
        [--force]

Writes ``<annotation>_noun.json`` (e.g. reid_raw_noun.json, release-compatible: each record gets
``cap_noun_phrases``) with a provenance file beside it, exactly as the first training run would. A copy that
still describes the annotation is kept; one from elsewhere that does not is replaced only with ``--force``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # project imports when run as tools/...py

from datasets.bases import dataset_files, parse_records, read_annotation  # noqa: E402
from datasets.phrase_cache import attach_phrases  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.config import CHOICES  # noqa: E402
from utils.logger import setup_logger  # noqa: E402


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root_dir", required=True, help="parent folder of <dataset_name>/")
    parser.add_argument("--dataset_name", required=True, choices=CHOICES["dataset_name"])
    parser.add_argument("--annotation_file", help="dataset_name custom: the annotation JSON (relative to root_dir)")
    parser.add_argument("--phrase_backend", default="pattern", choices=CHOICES["phrase_backend"])
    parser.add_argument("--force", action="store_true", help="replace a phrase copy that came from elsewhere")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    setup_logger(None)
    files = dataset_files(args.dataset_name, args.root_dir, args.annotation_file)
    annotation = read_annotation(files.annotation)
    records = attach_phrases(files, annotation, parse_records(files, annotation.records), args.phrase_backend,
                             write=True, replace_foreign=args.force)
    found = sum(1 for r in records for p in r.phrases if p)
    captions = sum(len(r.captions) for r in records)
    print(f"{files.noun_copy}: attribute phrases for {found} of {captions} captions")
    return files.noun_copy


if __name__ == "__main__":
    run_cli(main)
