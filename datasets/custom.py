"""Your own data: a JSON list of ``{"id", "img_path", "captions", "split"}`` records (RSTPReid's fields).

Selected with ``dataset_name: custom`` and ``annotation_file: <path>`` (a relative path resolves against
``root_dir``). ``img_path`` is relative to the annotation file's folder, or absolute. Splits are train (required),
val and test; ``cap_noun_phrases`` (one list of phrases per caption) is optional. The phrase copy is
``<annotation stem>_noun.json`` beside the annotation.
"""
from __future__ import annotations

import os
from pathlib import Path

from datasets.bases import Benchmark, DatasetError, DatasetFiles, register

NOUN_SUFFIX = "_noun"  # reid_raw.json -> reid_raw_noun.json, as the authors name their copies
EXAMPLE = '[{"id": 1, "img_path": "imgs/0001_a.jpg", "captions": ["A man in a red coat."], "split": "train"}, ...]'


@register
class Custom(Benchmark):
    name = "custom"
    annotation_files = ()
    noun_file = ""
    path_field = "img_path"
    splits = ("train", "val", "test")

    @classmethod
    def files(cls, root_dir: str | os.PathLike, annotation_file: str | None = None) -> DatasetFiles:
        if not annotation_file:
            raise DatasetError("dataset_name: custom needs annotation_file: <your annotation JSON> (relative to "
                               f"root_dir or absolute), a JSON list of records like {EXAMPLE}")
        path = Path(annotation_file)
        if not path.is_absolute():
            path = Path(root_dir) / path
        if not path.is_file():
            raise DatasetError(f"{path}: annotation file not found (annotation_file = {annotation_file!r}, "
                               f"root_dir = {str(root_dir)!r}); expected a JSON list of records like {EXAMPLE}")
        return DatasetFiles(cls.name, path, path.parent, path.with_name(f"{path.stem}{NOUN_SUFFIX}.json"),
                            cls.path_field, cls.splits)
