"""Write a benchmark's annotation copy with attribute phrases (cap_noun_phrases), e.g. reid_raw_noun.json.

python tools/extract_phrases.py --root_dir R --dataset_name D [--phrase_backend pattern|spacy]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.bases import PHRASES_FIELD, get_benchmark, read_json_list, write_noun_copy  # noqa: E402
from datasets.phrases import extract_phrases  # noqa: E402
from utils.config import CHOICES  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root_dir", required=True, help="parent folder of <dataset_name>/")
    parser.add_argument("--dataset_name", required=True, choices=CHOICES["dataset_name"])
    parser.add_argument("--phrase_backend", default="pattern", choices=CHOICES["phrase_backend"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    bench = get_benchmark(args.dataset_name)
    dataset_dir = Path(args.root_dir) / bench.name
    source = bench.annotation_path(dataset_dir)
    records = read_json_list(source)
    for record in tqdm(records, desc=f"phrases of {source.name}", unit="record"):
        record[PHRASES_FIELD] = [extract_phrases(c, args.phrase_backend) for c in record.get("captions", [])]
    out = dataset_dir / bench.noun_file
    write_noun_copy(out, records)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
