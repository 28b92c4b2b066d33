"""Annotation reading shared by every dataset reader (method §2), and the reader registry.

A reader names its files (``DatasetFiles``: annotation JSON, image root, phrase copy) and the record fields;
``read_benchmark`` turns the annotation into training samples (identities re-indexed 0..N-1) and, per
evaluation split, a gallery (image paths + pids) and queries (captions + pids).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Sequence

from utils.errors import UserError

logger = logging.getLogger(__name__)

PHRASES_FIELD = "cap_noun_phrases"  # per-caption phrase lists in the authors' *_noun.json copies
IMAGE_DIR = "imgs"
TRAIN_SPLIT = "train"
SplitCounts = tuple[int, int, int]  # identities, images, captions of one split


class DatasetError(UserError, ValueError):
    """A dataset folder or annotation file that does not match the expected layout."""


@dataclass(frozen=True)
class TrainSample:
    """One caption with its image: the unit of training (method §2)."""

    pid: int  # re-indexed identity, 0..N-1
    image_id: int  # index of the image among the training images
    img_path: str
    caption: str
    phrases: tuple[str, ...]


@dataclass
class EvalSplit:
    """Gallery images and query captions of one evaluation split (method §1, 8)."""

    img_paths: list[str] = field(default_factory=list)
    image_pids: list[int] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    caption_pids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class DataRecord:
    """Which data a run read: the annotation file, the SHA-256 of its bytes and the size of each split."""

    annotation: Path
    sha256: str
    counts: dict[str, SplitCounts]  # (identities, images, captions) per split present

    def to_dict(self) -> dict:
        """JSON-ready: the split sizes named."""
        return {"annotation": str(self.annotation), "annotation_sha256": self.sha256,
                "splits": {split: dict(zip(("ids", "images", "captions"), counts))
                           for split, counts in self.counts.items()}}


@dataclass
class BenchmarkData:
    """What a reader returns."""

    name: str
    train: list[TrainSample]
    num_classes: int
    eval_splits: dict[str, EvalSplit]
    annotation: Path
    source: DataRecord


@dataclass(frozen=True)
class Record:
    """One validated annotation record: an image and its captions."""

    split: str
    pid: int
    img_path: str
    captions: tuple[str, ...]
    phrases: tuple[tuple[str, ...], ...] | None


@dataclass(frozen=True)
class DatasetFiles:
    """Where one dataset's files are and how its records name them."""

    name: str
    annotation: Path  # the annotation JSON (a list of records)
    image_root: Path  # record image paths are relative to this folder (or absolute)
    noun_copy: Path  # the annotation copy with per-caption attribute phrases (PHRASES_FIELD)
    path_field: str  # record field holding the image path
    splits: tuple[str, ...]  # the splits a record may name

    @property
    def required_fields(self) -> tuple[str, ...]:
        return ("id", self.path_field, "captions", "split")


@dataclass(frozen=True)
class Annotation:
    """The raw records of an annotation file and the SHA-256 of its bytes (what a phrase copy was made from)."""

    path: Path
    records: list[dict]
    sha256: str


@dataclass(frozen=True)
class OlderRelease:
    """A superseded release of a benchmark's annotation, recognised by its identities per split."""

    ids: dict[str, int]  # identities per split, every split of the release
    fix: str  # what to use instead, and why


class Benchmark:
    """A benchmark's file conventions; subclasses set the class attributes (method §2 table)."""

    name: ClassVar[str]
    annotation_files: ClassVar[tuple[str, ...]]  # accepted names of the annotation JSON, preferred first
    noun_file: ClassVar[str]  # the copy with cap_noun_phrases
    path_field: ClassVar[str]  # record field holding the image path relative to imgs/
    splits: ClassVar[tuple[str, ...]]
    published: ClassVar[dict[str, SplitCounts]] = {}  # per split, as the literature reports it (README table)
    older_releases: ClassVar[tuple[OlderRelease, ...]] = ()

    @classmethod
    def missing_annotation_hint(cls, dataset_dir: Path) -> str:
        """Extra advice when no annotation file is found (overridden where a common mistake exists)."""
        return ""

    @classmethod
    def files(cls, root_dir: str | os.PathLike, annotation_file: str | None = None) -> DatasetFiles:
        """The files under ``<root_dir>/<name>/``, or a DatasetError describing the expected layout."""
        if annotation_file:
            raise DatasetError(f"annotation_file = {annotation_file!r} is for dataset_name: custom; {cls.name} "
                               f"always reads <root_dir>/{cls.name}/{cls.annotation_files[0]}")
        dataset_dir = Path(root_dir) / cls.name
        if not dataset_dir.is_dir():
            raise DatasetError(f"{dataset_dir}: dataset folder not found. {cls.layout()}")
        found = next((dataset_dir / n for n in cls.annotation_files if (dataset_dir / n).is_file()), None)
        if found is None:
            names = " or ".join(cls.annotation_files)
            raise DatasetError(f"{dataset_dir}: annotation file {names} not found. {cls.layout()}"
                               f"{cls.missing_annotation_hint(dataset_dir)}")
        return DatasetFiles(cls.name, found, dataset_dir / IMAGE_DIR, dataset_dir / cls.noun_file, cls.path_field,
                            cls.splits)

    @classmethod
    def layout(cls) -> str:
        return (f"Expected layout: <root_dir>/{cls.name}/{IMAGE_DIR}/... and <root_dir>/{cls.name}/"
                f"{cls.annotation_files[0]} (a JSON list of records with fields "
                f"{', '.join(('id', cls.path_field, 'captions', 'split'))}).")


DATASETS: dict[str, type[Benchmark]] = {}


def register(cls: type[Benchmark]) -> type[Benchmark]:
    """Class decorator: make a dataset reader available by its name."""
    DATASETS[cls.name] = cls
    return cls


def get_benchmark(name: str) -> type[Benchmark]:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; registered: {sorted(DATASETS)}")
    return DATASETS[name]


def dataset_files(name: str, root_dir: str | os.PathLike, annotation_file: str | None = None) -> DatasetFiles:
    """The files of dataset ``name`` under ``root_dir`` (``annotation_file``: the custom dataset's JSON)."""
    return get_benchmark(name).files(root_dir, annotation_file)


def read_json_bytes(path: Path) -> bytes:
    """The bytes of a file the project reads, or a DatasetError naming it (missing, unreadable)."""
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: file not found") from exc
    except OSError as exc:  # permission denied on a shared folder, a folder in its place, ...
        raise DatasetError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions") from exc


def parse_json_list(data: bytes, path: Path) -> list[dict]:
    """The top-level list of records of a JSON file, with errors naming the file."""
    try:
        parsed = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text (byte {exc.start}); save the annotation as UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(parsed, list) or not all(isinstance(r, dict) for r in parsed):
        raise DatasetError(f"{path}: expected a JSON list of records (objects)")
    return parsed


def read_annotation(path: Path) -> Annotation:
    """The annotation's records and the hash of its bytes."""
    data = read_json_bytes(path)
    return Annotation(path, parse_json_list(data, path), hashlib.sha256(data).hexdigest())


def validate_phrases(value: object, n_captions: int, where: str) -> tuple[tuple[str, ...], ...]:
    """A record's PHRASES_FIELD: one list of strings per caption."""
    ok = (isinstance(value, list) and len(value) == n_captions
          and all(isinstance(p, list) and all(isinstance(s, str) for s in p) for p in value))
    if not ok:
        raise DatasetError(f"{where}: '{PHRASES_FIELD}' must be a list of {n_captions} lists of strings "
                           f"(one per caption)")
    return tuple(tuple(p) for p in value)


def parse_id(value: object, where: str) -> int:
    """An identity id: any integer (also negative or large), or a string or float holding one."""
    if isinstance(value, bool):
        raise DatasetError(f"{where}: 'id' must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value.strip())
    raise DatasetError(f"{where}: 'id' must be an integer, got {value!r}")


def parse_record(files: DatasetFiles, raw: dict, index: int) -> Record:
    """Validate one raw record; errors name the file, the record and the field."""
    where = f"{files.annotation}: record {index}"
    missing = [f for f in files.required_fields if f not in raw]
    if missing:
        raise DatasetError(f"{where}: missing field(s) {missing}; each record needs {list(files.required_fields)}")
    if raw["split"] not in files.splits:
        raise DatasetError(f"{where}: unknown split {raw['split']!r}; {files.name} has splits {list(files.splits)}")
    captions = raw["captions"]
    if not isinstance(captions, list) or not captions:
        raise DatasetError(f"{where}: 'captions' must be a non-empty list of strings")
    for j, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise DatasetError(f"{where}: caption {j} is {type(caption).__name__} {caption!r}, not a string")
        if not caption.strip():
            raise DatasetError(f"{where}: caption {j} is empty; every caption must be a non-empty string")
    pid = parse_id(raw["id"], where)
    path = raw[files.path_field]
    if not isinstance(path, str) or not path.strip():
        raise DatasetError(f"{where}: '{files.path_field}' must be a non-empty string (an image path), got {path!r}")
    phrases = None
    if PHRASES_FIELD in raw:
        phrases = validate_phrases(raw[PHRASES_FIELD], len(captions), where)
    return Record(raw["split"], pid, str(files.image_root / path), tuple(captions), phrases)


def parse_records(files: DatasetFiles, raw_records: Sequence[dict]) -> list[Record]:
    """Every record validated (the first bad one raises)."""
    return [parse_record(files, raw, i) for i, raw in enumerate(raw_records)]
