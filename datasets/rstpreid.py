"""RSTPReid: data_captions.json with img_path and two captions per image (SPEC 2)."""
from __future__ import annotations

from datasets.bases import Benchmark, register


@register
class RSTPReid(Benchmark):
    name = "RSTPReid"
    annotation_files = ("data_captions.json",)
    noun_file = "data_captions_noun.json"
    path_field = "img_path"
    splits = ("train", "val", "test")
