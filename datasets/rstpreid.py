"""RSTPReid: data_captions.json with img_path and two captions per image (method §2)."""
from __future__ import annotations

from datasets.bases import Benchmark, OlderRelease, register

# An earlier data_captions.json split the same 4,101 identities 3,901 / 100 / 100.
EARLIER_SPLIT = OlderRelease(
    ids={"train": 3_901, "val": 100, "test": 100},
    fix="use the current data_captions.json of the RSTPReid release, the one with 3,701 / 200 / 200 identities "
        "(train / val / test): results in the literature use that split")


@register
class RSTPReid(Benchmark):
    name = "RSTPReid"
    annotation_files = ("data_captions.json",)
    noun_file = "data_captions_noun.json"
    path_field = "img_path"
    splits = ("train", "val", "test")
    published = {"train": (3_701, 18_505, 37_010), "val": (200, 1_000, 2_000), "test": (200, 1_000, 2_000)}
    older_releases = (EARLIER_SPLIT,)
