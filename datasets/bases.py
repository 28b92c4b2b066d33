"""Benchmark annotation reading shared by the three readers (SPEC 2), and the reader registry.

A reader turns ``<root_dir>/<name>/<annotation>.json`` into training samples (identities re-indexed
0..N-1) and per evaluation split a gallery (image paths + pids) and queries (captions + pids).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

from prettytable import PrettyTable

from datasets.phrases import extract_phrases
from utils.config import SPLITS
from utils.errors import UserError
from utils.io import atomic_write_text

logger = logging.getLogger(__name__)

PHRASES_FIELD = "cap_noun_phrases"  # per-caption phrase lists in the authors' *_noun.json copies
IMAGE_DIR = "imgs"
SHOWN_MISSING = 5  # missing image paths quoted in the error


class DatasetError(UserError, ValueError):
    """A dataset folder or annotation file that does not match the expected layout."""


@dataclass(frozen=True)
class TrainSample:
    """One caption with its image: the unit of training (SPEC 2)."""

    pid: int  # re-indexed identity, 0..N-1
    image_id: int  # index of the image among the training images
    img_path: str
    caption: str
    phrases: tuple[str, ...]


@dataclass
class EvalSplit:
    """Gallery images and query captions of one evaluation split (SPEC 1, 8)."""

    img_paths: list[str] = field(default_factory=list)
    image_pids: list[int] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    caption_pids: list[int] = field(default_factory=list)


@dataclass
class BenchmarkData:
    """What a reader returns."""

    name: str
    train: list[TrainSample]
    num_classes: int
    eval_splits: dict[str, EvalSplit]


@dataclass(frozen=True)
class Record:
    """One validated annotation record: an image and its captions."""

    split: str
    pid: int
    img_path: str
    captions: tuple[str, ...]
    phrases: tuple[tuple[str, ...], ...] | None


class Benchmark:
    """A benchmark's file conventions; subclasses set the class attributes (SPEC 2 table)."""

    name: ClassVar[str]
    annotation_files: ClassVar[tuple[str, ...]]  # accepted names of the annotation JSON, preferred first
    noun_file: ClassVar[str]  # the copy with cap_noun_phrases
    path_field: ClassVar[str]  # record field holding the image path relative to imgs/
    splits: ClassVar[tuple[str, ...]]

    @classmethod
    def missing_annotation_hint(cls, dataset_dir: Path) -> str:
        """Extra advice when no annotation file is found (overridden where a common mistake exists)."""
        return ""

    @classmethod
    def annotation_path(cls, dataset_dir: Path) -> Path:
        """The annotation file in ``dataset_dir``, or a DatasetError describing the expected layout."""
        if not dataset_dir.is_dir():
            raise DatasetError(f"{dataset_dir}: dataset folder not found. {cls.layout()}")
        for name in cls.annotation_files:
            if (dataset_dir / name).is_file():
                return dataset_dir / name
        names = " or ".join(cls.annotation_files)
        raise DatasetError(f"{dataset_dir}: annotation file {names} not found. {cls.layout()}"
                           f"{cls.missing_annotation_hint(dataset_dir)}")

    @classmethod
    def layout(cls) -> str:
        return (f"Expected layout: <root_dir>/{cls.name}/{IMAGE_DIR}/... and <root_dir>/{cls.name}/"
                f"{cls.annotation_files[0]} (a JSON list of records with fields "
                f"{', '.join(cls.required_fields())}).")

    @classmethod
    def required_fields(cls) -> tuple[str, ...]:
        return ("id", cls.path_field, "captions", "split")


DATASETS: dict[str, type[Benchmark]] = {}


def register(cls: type[Benchmark]) -> type[Benchmark]:
    """Class decorator: make a benchmark available by its name."""
    DATASETS[cls.name] = cls
    return cls


def get_benchmark(name: str) -> type[Benchmark]:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; registered: {sorted(DATASETS)}")
    return DATASETS[name]


def read_json_list(path: Path) -> list[dict]:
    """The top-level list of records of an annotation file, with errors naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DatasetError(f"{path}: expected a JSON list of records (objects)")
    return data


def _validate_phrases(value: object, n_captions: int, where: str) -> tuple[tuple[str, ...], ...]:
    ok = (isinstance(value, list) and len(value) == n_captions
          and all(isinstance(p, list) and all(isinstance(s, str) for s in p) for p in value))
    if not ok:
        raise DatasetError(f"{where}: '{PHRASES_FIELD}' must be a list of {n_captions} lists of strings "
                           f"(one per caption)")
    return tuple(tuple(p) for p in value)


def parse_record(bench: type[Benchmark], raw: dict, index: int, path: Path, dataset_dir: Path) -> Record:
    """Validate one raw record; errors name the file, the record and the field."""
    where = f"{path}: record {index}"
    missing = [f for f in bench.required_fields() if f not in raw]
    if missing:
        raise DatasetError(f"{where}: missing field(s) {missing}; each record needs {list(bench.required_fields())}")
    if raw["split"] not in bench.splits:
        raise DatasetError(f"{where}: unknown split {raw['split']!r}; {bench.name} has splits {list(bench.splits)}")
    captions = raw["captions"]
    if not isinstance(captions, list) or not captions:
        raise DatasetError(f"{where}: 'captions' must be a non-empty list of strings")
    if not all(isinstance(c, str) and c.strip() for c in captions):
        raise DatasetError(f"{where}: every caption must be a non-empty string")
    try:
        pid = int(raw["id"])
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{where}: 'id' must be an integer, got {raw['id']!r}") from exc
    phrases = None
    if PHRASES_FIELD in raw:
        phrases = _validate_phrases(raw[PHRASES_FIELD], len(captions), where)
    img_path = str(dataset_dir / IMAGE_DIR / str(raw[bench.path_field]))
    return Record(raw["split"], pid, img_path, tuple(captions), phrases)


def _with_phrases(raw_records: list[dict], extract: Callable[[str], list[str]]) -> int:
    """Fill in missing cap_noun_phrases in place; return how many records got them."""
    filled = 0
    for raw in raw_records:
        if PHRASES_FIELD not in raw and isinstance(raw.get("captions"), list):
            raw[PHRASES_FIELD] = [extract(c) for c in raw["captions"]]
            filled += 1
    return filled


def write_noun_copy(path: Path, raw_records: list[dict]) -> None:
    """Write the release-compatible annotation copy atomically (temp file + os.replace)."""
    atomic_write_text(path, json.dumps(raw_records, ensure_ascii=False))


def load_raw_records(bench: type[Benchmark], dataset_dir: Path, need_phrases: bool,
                     phrase_backend: str) -> tuple[list[dict], Path]:
    """Raw records, from the _noun copy when present; extracts and caches phrases when needed and absent."""
    annotation = bench.annotation_path(dataset_dir)
    noun_path = dataset_dir / bench.noun_file
    source = noun_path if noun_path.is_file() else annotation
    raw_records = read_json_list(source)
    if need_phrases:
        filled = _with_phrases(raw_records, lambda c: extract_phrases(c, phrase_backend))
        if filled:
            logger.info("extracted attribute phrases for %d records of %s", filled, source)
            try:
                write_noun_copy(noun_path, raw_records)
                logger.info("cached the phrases in %s", noun_path)
            except OSError as exc:
                logger.warning("could not write %s (%s); phrases will be extracted again next run", noun_path, exc)
    return raw_records, source


def check_images(paths: list[str], source: Path) -> None:
    """Fail before training when image files are missing: count and first few paths."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = "\n  ".join(missing[:SHOWN_MISSING])
        raise DatasetError(f"{source}: {len(missing)} of {len(paths)} image files do not exist, e.g.\n  {shown}")


def _split_records(records: list[Record]) -> tuple[list[TrainSample], int, dict[str, EvalSplit]]:
    train_pids = sorted({r.pid for r in records if r.split == "train"})
    new_pid = {pid: i for i, pid in enumerate(train_pids)}  # SPEC 2: training ids become 0..N-1
    train: list[TrainSample] = []
    evals: dict[str, EvalSplit] = {}
    image_id = 0
    for r in records:
        if r.split == "train":
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


def statistics_table(data: BenchmarkData) -> PrettyTable:
    """ids / images / captions per split."""
    table = PrettyTable(["split", "ids", "images", "captions"])
    train = data.train
    table.add_row(["train", data.num_classes, len({s.image_id for s in train}), len(train)])
    for name in SPLITS:
        if name in data.eval_splits:
            s = data.eval_splits[name]
            table.add_row([name, len(set(s.image_pids)), len(s.img_paths), len(s.captions)])
    return table


def read_benchmark(name: str, root_dir: str | os.PathLike, need_phrases: bool = False,
                   phrase_backend: str = "pattern", verify_images: bool = True) -> BenchmarkData:
    """Read, validate and split a benchmark; logs its statistics table."""
    bench = get_benchmark(name)
    dataset_dir = Path(root_dir) / bench.name
    raw_records, source = load_raw_records(bench, dataset_dir, need_phrases, phrase_backend)
    records = [parse_record(bench, raw, i, source, dataset_dir) for i, raw in enumerate(raw_records)]
    if verify_images:
        check_images([r.img_path for r in records], source)
    train, num_classes, evals = _split_records(records)
    if not train:
        raise DatasetError(f"{source}: no record has split 'train'")
    data = BenchmarkData(bench.name, train, num_classes, evals)
    logger.info("%s statistics (from %s):\n%s", bench.name, source, statistics_table(data))
    return data
