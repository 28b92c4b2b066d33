"""Reading a dataset: validate its annotation, attach attribute phrases, check images, split (method §2)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

from prettytable import PrettyTable

from datasets.bases import (
    TRAIN_SPLIT,
    BenchmarkData,
    DataRecord,
    DatasetError,
    DatasetFiles,
    EvalSplit,
    Record,
    SplitCounts,
    TrainSample,
    dataset_files,
    parse_records,
    read_annotation,
)
from datasets.phrase_cache import attach_phrases
from utils.config import SPLITS

logger = logging.getLogger(__name__)

SHOWN_MISSING = 5  # missing image paths quoted in the error
NO_COUNTS = ("-", "-", "-")  # a split one side of the statistics table lacks


def check_images(paths: list[str], source: Path) -> None:
    """Fail before training when image files are missing: count and first few paths."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = ", ".join(missing[:SHOWN_MISSING])
        raise DatasetError(f"{source}: {len(missing)} of {len(paths)} image files do not exist, e.g. {shown}")


def check_splits(files: DatasetFiles, records: Sequence[Record], required: Sequence[str]) -> None:
    """A training split, and every split in ``required`` (the config's eval_splits / select_on), exist."""
    present = {r.split for r in records}
    for split in (TRAIN_SPLIT, *required):
        if split not in present:
            have = [s for s in SPLITS if s in present]
            hint = "" if split == TRAIN_SPLIT else " (set eval_splits and select_on to splits it has)"
            raise DatasetError(f"{files.annotation}: no record has split {split!r}; it has {have}{hint}")


def _split_records(records: list[Record]) -> tuple[list[TrainSample], int, dict[str, EvalSplit]]:
    train_pids = sorted({r.pid for r in records if r.split == TRAIN_SPLIT})
    new_pid = {pid: i for i, pid in enumerate(train_pids)}  # method §2: training ids become 0..N-1
    train: list[TrainSample] = []
    evals: dict[str, EvalSplit] = {}
    image_id = 0
    for r in records:
        if r.split == TRAIN_SPLIT:
            for j, caption in enumerate(r.captions):
                phrases = r.phrases[j] if r.phrases is not None else ()
                train.append(TrainSample(new_pid[r.pid], image_id, r.img_path, caption, phrases))
            image_id += 1
        else:
            split = evals.setdefault(r.split, EvalSplit())
            split.img_paths.append(r.img_path)
            split.image_pids.append(r.pid)
            split.captions.extend(r.captions)
            split.caption_pids.extend([r.pid] * len(r.captions))
    return train, len(train_pids), evals


def split_counts(records: Sequence[Record]) -> dict[str, SplitCounts]:
    """(identities, images, captions) per split present, in SPLITS order."""
    counts = {}
    for split in SPLITS:
        chosen = [r for r in records if r.split == split]
        if chosen:
            counts[split] = (len({r.pid for r in chosen}), len(chosen), sum(len(r.captions) for r in chosen))
    return counts


def statistics_table(counts: dict[str, SplitCounts], published: dict[str, SplitCounts] | None = None) -> PrettyTable:
    """ids / images / captions per split; with ``published``, the published numbers beside them ('-': none)."""
    columns = ["ids", "images", "captions"]
    extra = [] if published is None else [f"published {c}" for c in columns]
    table = PrettyTable(["split", *columns, *extra])
    for split in [s for s in SPLITS if s in counts or s in (published or {})]:
        row = [split, *counts.get(split, NO_COUNTS)]
        table.add_row(row if published is None else [*row, *published.get(split, NO_COUNTS)])
    return table


def read_benchmark(name: str, root_dir: str | os.PathLike, need_phrases: bool = False,
                   phrase_backend: str = "pattern", verify_images: bool = True, annotation_file: str | None = None,
                   required_splits: Sequence[str] = (), cache_phrases: bool = True) -> BenchmarkData:
    """Read, validate and split a dataset; logs its statistics table.

    The annotation file is always read and validated first. With ``need_phrases`` every caption gets its
    attribute phrases (datasets/phrase_cache.py); ``cache_phrases`` lets this process write the phrase copy.
    """
    files = dataset_files(name, root_dir, annotation_file)
    annotation = read_annotation(files.annotation)
    records = parse_records(files, annotation.records)
    check_splits(files, records, required_splits)
    if need_phrases:
        records = attach_phrases(files, annotation, records, phrase_backend, write=cache_phrases)
    if verify_images:
        check_images([r.img_path for r in records], files.annotation)
    train, num_classes, evals = _split_records(records)
    source = DataRecord(files.annotation, annotation.sha256, split_counts(records))
    logger.info("%s statistics (from %s):\n%s", files.name, files.annotation, statistics_table(source.counts))
    return BenchmarkData(files.name, train, num_classes, evals, files.annotation, source)
