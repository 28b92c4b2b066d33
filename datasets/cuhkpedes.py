"""CUHK-PEDES: reid_raw.json with train/val/test splits (method §2)."""
from __future__ import annotations

from pathlib import Path

from datasets.bases import Benchmark, register

UNSPLIT_FILE = "caption_all.json"


@register
class CUHKPEDES(Benchmark):
    name = "CUHK-PEDES"
    annotation_files = ("reid_raw.json",)
    noun_file = "reid_raw_noun.json"
    path_field = "file_path"
    splits = ("train", "val", "test")
    published = {"train": (11_003, 34_054, 68_108), "val": (1_000, 3_078, 6_158), "test": (1_000, 3_074, 6_156)}

    @classmethod
    def missing_annotation_hint(cls, dataset_dir: Path) -> str:
        if (dataset_dir / UNSPLIT_FILE).is_file():
            return (f" Found {UNSPLIT_FILE}: that file has the captions but not the train/val/test splits."
                    f" The standard split (11,003 / 1,000 / 1,000 identities) is reid_raw.json, which the"
                    f" CUHK-PEDES authors distribute with the dataset on request and which text-based ReID"
                    f" code releases (IRRA, SG-IHA) expect; place it next to {UNSPLIT_FILE}.")
        return ""
