"""Attribute phrases of every caption (method §6.1), and the annotation copy that caches them (``*_noun.json``).

Phrases come, in this order, from
1. the annotation file itself (a ``cap_noun_phrases`` field per record);
2. the phrase copy beside it, while that copy still describes the annotation:
   - the project's own copy, which a provenance file beside it ties to the annotation's content hash, the
     phrase backend and the extractor's version: used while all three are unchanged, rebuilt (with a log
     line saying why) when any changed;
   - a copy from elsewhere (the authors' release): used only if its records are the annotation's records
     (ids, image paths, splits and captions, in order), otherwise a warning names the first difference;
3. extraction (datasets/phrases.py), cached as the project's own copy. A copy from elsewhere is never
   overwritten unless asked (``replace_foreign``).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from datasets.bases import (
    PHRASES_FIELD,
    Annotation,
    DatasetError,
    DatasetFiles,
    Record,
    parse_json_list,
    read_json_bytes,
    validate_phrases,
)
from datasets.phrases import check_backend, extract_phrases, extractor_version
from utils.io import atomic_write_text

logger = logging.getLogger(__name__)

PROVENANCE_SUFFIX = ".provenance.json"  # beside the copy: reid_raw_noun.json -> reid_raw_noun.provenance.json
PHRASES = tuple[tuple[str, ...], ...]


def provenance_path(copy: Path) -> Path:
    return copy.with_name(copy.stem + PROVENANCE_SUFFIX)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_provenance(copy: Path) -> dict[str, Any]:
    """The provenance written with the project's own copy; {} when absent or unreadable (then the copy is foreign)."""
    try:
        data = json.loads(provenance_path(copy).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _stale_reason(provenance: dict[str, Any], annotation: Annotation, backend: str) -> str | None:
    """Why the project's own copy no longer describes the annotation, or None when it still does."""
    if provenance.get("annotation_sha256") != annotation.sha256:
        return f"{annotation.path.name} changed since the copy was made"
    if provenance.get("phrase_backend") != backend:
        return f"phrase_backend is {backend!r}, the copy was made with {provenance.get('phrase_backend')!r}"
    if provenance.get("extractor_version") != extractor_version(backend):
        return "the phrase extractor changed since the copy was made"
    return None


def first_difference(files: DatasetFiles, copy: Sequence[dict], annotation: Sequence[dict]) -> str | None:
    """Where a copy's records stop being the annotation's (ids, image paths, splits, captions, in order)."""
    for index, (ours, theirs) in enumerate(zip(copy, annotation)):
        for key in ("id", files.path_field, "split", "captions"):
            if ours.get(key) != theirs.get(key):
                return f"record {index}: {key} {ours.get(key)!r} in the copy, {theirs.get(key)!r} in the annotation"
    if len(copy) != len(annotation):
        return f"the copy has {len(copy)} records, the annotation {len(annotation)}"
    return None


def _phrases_of(copy: Path, records: Sequence[dict], captions: Sequence[int]) -> list[PHRASES] | None:
    """Each record's validated phrase lists; None (with a warning) when the copy lacks or mangles them."""
    try:
        return [validate_phrases(r.get(PHRASES_FIELD), n, f"{copy}: record {i}")
                for i, (r, n) in enumerate(zip(records, captions))]
    except DatasetError as exc:
        logger.warning("ignoring the phrases of %s (%s): extracting them afresh", copy, exc)
        return None


def phrases_from_copy(files: DatasetFiles, annotation: Annotation, records: Sequence[Record],
                      backend: str) -> tuple[list[PHRASES] | None, bool]:
    """(per-record phrases from the copy or None, whether the project may write the copy)."""
    copy = files.noun_copy
    if not copy.is_file():
        return None, True
    data = read_json_bytes(copy)  # an unreadable copy is an error naming it
    captions = [len(r.captions) for r in records]
    provenance = _read_provenance(copy)
    if provenance.get("copy_sha256") == _sha256(data):  # the project's own copy
        reason = _stale_reason(provenance, annotation, backend)
        if reason:
            logger.info("rebuilding %s: %s", copy, reason)
            return None, True
        return _phrases_of(copy, parse_json_list(data, copy), captions), True
    try:
        foreign = parse_json_list(data, copy)
    except DatasetError as exc:
        logger.warning("ignoring %s (%s): extracting the phrases afresh; delete it to let the project cache its "
                       "own copy there", copy, exc)
        return None, False
    difference = first_difference(files, foreign, annotation.records)
    if difference:
        logger.warning("%s does not describe %s (%s): its phrases are not used, they are extracted afresh; delete or "
                       "rename it to let the project cache its own copy there", copy, annotation.path, difference)
        return None, False
    logger.info("attribute phrases from %s (its records are those of %s)", copy, annotation.path.name)
    return _phrases_of(copy, foreign, captions), False


def write_phrase_copy(files: DatasetFiles, annotation: Annotation, phrases: Sequence[PHRASES], backend: str) -> None:
    """The annotation with PHRASES_FIELD on every record (release-compatible), then its provenance, atomically."""
    copy = files.noun_copy
    out = [{**raw, PHRASES_FIELD: [list(p) for p in record_phrases]}
           for raw, record_phrases in zip(annotation.records, phrases)]
    text = json.dumps(out, ensure_ascii=False)
    provenance = {"annotation": annotation.path.name, "annotation_sha256": annotation.sha256,
                  "phrase_backend": backend, "extractor_version": extractor_version(backend),
                  "copy_sha256": _sha256(text.encode("utf-8"))}
    try:
        atomic_write_text(copy, text)
        atomic_write_text(provenance_path(copy), json.dumps(provenance, indent=1) + "\n")
    except OSError as exc:
        logger.warning("could not write %s (%s); phrases will be extracted again next run", copy, exc)
        return
    logger.info("cached the phrases in %s", copy)


def attach_phrases(files: DatasetFiles, annotation: Annotation, records: Sequence[Record], backend: str,
                   write: bool = True, replace_foreign: bool = False) -> list[Record]:
    """``records`` with phrases for every caption; ``write``: this process may cache them in the copy."""
    if all(r.phrases is not None for r in records):  # the annotation carries them itself
        return list(records)
    cached, writable = phrases_from_copy(files, annotation, records, backend)
    if cached is None:
        check_backend(backend)
        todo = sum(len(r.captions) for r in records if r.phrases is None)
        logger.info("extracting the attribute phrases of %d captions (%s backend)", todo, backend)
        cached = [r.phrases if r.phrases is not None else tuple(tuple(extract_phrases(c, backend)) for c in r.captions)
                  for r in records]
        if write and (writable or replace_foreign):
            write_phrase_copy(files, annotation, cached, backend)
    return [r if r.phrases is not None else replace(r, phrases=p) for r, p in zip(records, cached)]
