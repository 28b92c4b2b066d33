"""ICFG-PEDES: ICFG-PEDES.json (some guides say ICFG_PEDES.json), train/test only (method §2)."""
from __future__ import annotations

from datasets.bases import Benchmark, register


@register
class ICFGPEDES(Benchmark):
    name = "ICFG-PEDES"
    annotation_files = ("ICFG-PEDES.json", "ICFG_PEDES.json")
    noun_file = "ICFG-PEDES_noun.json"
    path_field = "file_path"
    splits = ("train", "test")
    published = {"train": (3_102, 34_674, 34_674), "test": (1_000, 19_848, 19_848)}
