"""The dataset doctor: every problem of a dataset's files found in one pass, before a training run meets it.

Nothing is written: each image is opened and decoded, every record validated (all failing ones are collected),
splits compared with each other and with the published counts, captions tokenized, and the attribute phrases
looked up the way training gets them (annotation field, a still-valid copy, else extraction) without caching
them. A finding is an error when training or evaluation would be wrong or fail, a warning when they would run
on data that is probably not what was meant.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Sequence

from tqdm import tqdm

from datasets.aqa import find_occurrences, is_valid_phrase
from datasets.bases import (
    TRAIN_SPLIT,
    Annotation,
    DatasetError,
    DatasetFiles,
    OlderRelease,
    Record,
    SplitCounts,
    dataset_files,
    get_benchmark,
    parse_record,
    read_annotation,
)
from datasets.phrase_cache import attach_phrases
from datasets.phrases import check_backend
from datasets.reader import split_counts, statistics_table
from utils.config import load_config
from utils.images import ImageError, load_image
from utils.tokenizer import DEFAULT_CONTEXT_LENGTH, SPECIAL_TOKENS, get_tokenizer

ERROR, WARNING = "error", "warning"
SHOWN_EXAMPLES = 5  # records quoted per finding (the count is always complete)
MAX_WORKERS = 8  # default decoding threads: this many, or fewer when the machine has fewer cores
CAPTION_SHOWN = 60  # characters of a long caption quoted in an example

# Finding codes.
ANNOTATION = "annotation_unreadable"
INVALID_RECORD = "invalid_record"
MISSING_IMAGE = "missing_image"
UNREADABLE_IMAGE = "unreadable_image"
SHARED_ID = "id_in_train_and_eval"
SHARED_IMAGE = "image_in_train_and_eval"
OLDER_RELEASE = "older_release"
DUPLICATE_CAPTION = "caption_under_several_ids"
LONG_CAPTION = "caption_truncated"
NO_PHRASE = "no_attribute_phrase"

Indexed = tuple[int, Record]  # a valid record and its index in the annotation


@dataclass(frozen=True)
class Example:
    """One record a finding is about."""

    record: int | None  # index in the annotation's list (None: the finding is about the whole file)
    image: str | None  # the record's image path
    detail: str  # what is wrong with this record


@dataclass(frozen=True)
class Finding:
    severity: str  # ERROR or WARNING
    code: str  # one of the finding codes above
    message: str  # names the file, the count and the fix
    count: int  # how many records, images, identities or captions are affected
    examples: list[Example] = field(default_factory=list)  # the first SHOWN_EXAMPLES


@dataclass
class Report:
    dataset: str
    annotation: str
    counts: dict[str, SplitCounts]  # (ids, images, captions) per split, of the records that passed validation
    published: dict[str, SplitCounts] | None  # None: no published counts (a custom dataset)
    images_checked: int  # distinct image files opened and decoded
    findings: list[Finding]

    def of(self, severity: str) -> list[Finding]:
        return [f for f in self.findings if f.severity == severity]

    @property
    def has_errors(self) -> bool:
        return bool(self.of(ERROR))

    def to_dict(self) -> dict:
        """The machine-readable report (``--json``)."""
        def named(counts: dict[str, SplitCounts]) -> dict[str, dict[str, int]]:
            return {split: dict(zip(("ids", "images", "captions"), row)) for split, row in counts.items()}

        return {"dataset": self.dataset, "annotation": self.annotation, "splits": named(self.counts),
                "published": None if self.published is None else named(self.published),
                "images_checked": self.images_checked, "errors": len(self.of(ERROR)),
                "warnings": len(self.of(WARNING)), "findings": [asdict(f) for f in self.findings]}


def default_workers() -> int:
    return min(MAX_WORKERS, os.cpu_count() or 1)


def _finding(severity: str, code: str, message: str, count: int, examples: Sequence[Example]) -> Finding:
    return Finding(severity, code, message, count, list(examples[:SHOWN_EXAMPLES]))


def _without_prefix(message: str, prefix: str) -> str:
    return message[len(prefix):] if message.startswith(prefix) else message


def validate_records(files: DatasetFiles, raws: Sequence[dict]) -> tuple[list[Indexed], list[Finding]]:
    """The records that pass parse_record, and one finding listing all that do not."""
    valid: list[Indexed] = []
    failed: list[Example] = []
    for index, raw in enumerate(raws):
        try:
            valid.append((index, parse_record(files, raw, index)))
        except DatasetError as exc:
            path = raw.get(files.path_field)
            image = str(files.image_root / path) if isinstance(path, str) and path.strip() else None
            where = f"{files.annotation}: record {index}: "
            failed.append(Example(index, image, _without_prefix(str(exc), where)))
    if not failed:
        return valid, []
    message = (f"{files.annotation}: {len(failed)} of {len(raws)} records fail validation; fix or remove them "
               f"(each record needs {list(files.required_fields)}, splits {list(files.splits)})")
    return valid, [_finding(ERROR, INVALID_RECORD, message, len(failed), failed)]


def image_problem(path: str) -> tuple[str, str] | None:
    """(finding code, reason) when the image is missing or does not decode to RGB; None when it does."""
    if not os.path.isfile(path):
        return MISSING_IMAGE, "file not found"
    try:
        load_image(path)
    except ImageError as exc:
        return UNREADABLE_IMAGE, _without_prefix(str(exc), f"{path}: ")
    return None


def image_findings(files: DatasetFiles, records: Sequence[Indexed], workers: int) -> tuple[int, list[Finding]]:
    """(distinct images checked, findings): every image opened and fully decoded, in parallel threads."""
    paths = list(dict.fromkeys(r.img_path for _, r in records))
    # PIL releases the GIL while it decodes: threads overlap the decoding (not the per-file Python work).
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = tqdm(pool.map(image_problem, paths), total=len(paths), desc="decoding images", unit="image")
        problems = {p: problem for p, problem in zip(paths, results) if problem}
    findings = []
    for code, what, fix in ((MISSING_IMAGE, "do not exist", f"restore them under {files.image_root} or fix the "
                             f"records' '{files.path_field}'"),
                            (UNREADABLE_IMAGE, "do not decode (truncated or not an image)",
                             "replace them with intact copies")):
        bad = {p for p, (c, _) in problems.items() if c == code}
        if bad:
            examples = [Example(i, r.img_path, problems[r.img_path][1]) for i, r in records if r.img_path in bad]
            message = f"{files.annotation}: {len(bad)} of {len(paths)} image files {what}; {fix}"
            findings.append(_finding(ERROR, code, message, len(bad), examples))
    return len(paths), findings


def overlap_findings(files: DatasetFiles, records: Sequence[Indexed]) -> list[Finding]:
    """Identities and image files of the training split that an evaluation split uses too."""
    train = [r for _, r in records if r.split == TRAIN_SPLIT]
    train_ids = {r.pid for r in train}
    train_paths = {os.path.normpath(r.img_path) for r in train}
    evaluated = [(i, r) for i, r in records if r.split != TRAIN_SPLIT]
    shared_ids = [(i, r) for i, r in evaluated if r.pid in train_ids]
    shared_paths = [(i, r) for i, r in evaluated if os.path.normpath(r.img_path) in train_paths]
    findings = []
    if shared_ids:
        n = len({r.pid for _, r in shared_ids})
        message = (f"{files.annotation}: {n} identities of the train split are also in an evaluation split: "
                   "evaluation then scores people the model was trained on; give each identity one split")
        examples = [Example(i, r.img_path, f"id {r.pid} in {r.split}, also in train") for i, r in shared_ids]
        findings.append(_finding(ERROR, SHARED_ID, message, n, examples))
    if shared_paths:
        n = len({os.path.normpath(r.img_path) for _, r in shared_paths})
        message = (f"{files.annotation}: {n} image files of the train split are also in an evaluation split: "
                   "evaluation then ranks pictures the model was trained on; give each image one split")
        examples = [Example(i, r.img_path, f"in {r.split}, also in train") for i, r in shared_paths]
        findings.append(_finding(ERROR, SHARED_IMAGE, message, n, examples))
    return findings


def older_release_findings(files: DatasetFiles, releases: Sequence[OlderRelease],
                           counts: dict[str, SplitCounts]) -> list[Finding]:
    """A warning when the identities per split are exactly those of a superseded release."""
    ids = {split: row[0] for split, row in counts.items()}
    findings = []
    for release in releases:
        if ids == release.ids:
            split_ids = " / ".join(f"{n:,}" for n in release.ids.values())
            message = (f"{files.annotation}: {split_ids} identities ({' / '.join(release.ids)}) are the split of "
                       f"an older release of {files.name}; {release.fix}")
            findings.append(_finding(WARNING, OLDER_RELEASE, message, 1, []))
    return findings


def normalised(caption: str) -> str:
    """The caption compared for duplicates: lower case, runs of whitespace as one space."""
    return " ".join(caption.lower().split())


def duplicate_findings(files: DatasetFiles, records: Sequence[Indexed]) -> list[Finding]:
    """Captions (ignoring case and spacing) that describe more than one identity."""
    where: dict[str, list[Indexed]] = {}
    originals: dict[str, str] = {}
    for i, r in records:
        for caption in r.captions:
            key = normalised(caption)
            where.setdefault(key, []).append((i, r))
            originals.setdefault(key, caption)
    shared = [(key, found) for key, found in where.items() if len({r.pid for _, r in found}) > 1]
    if not shared:
        return []
    examples = []
    for key, found in shared:
        i, r = found[0]
        ids = ", ".join(str(pid) for pid in sorted({r.pid for _, r in found}))
        examples.append(Example(i, r.img_path, f"{originals[key]!r} under ids {ids}"))
    message = (f"{files.annotation}: {len(shared)} captions (ignoring case and spacing) describe several identities: "
               "training pushes apart people the text cannot tell apart, and such a query's other identities count "
               "as misses; reword or drop the copies where the dataset is yours")
    return [_finding(WARNING, DUPLICATE_CAPTION, message, len(shared), examples)]


def long_caption_findings(files: DatasetFiles, records: Sequence[Indexed], text_length: int) -> list[Finding]:
    """Captions whose SOT + BPE tokens + EOT exceed text_length: the tokenizer cuts their end (method §4)."""
    tokenizer = get_tokenizer()
    long, total = [], 0
    for i, r in records:
        for caption in r.captions:
            total += 1
            tokens = tokenizer.sequence_length(caption)
            if tokens > text_length:
                shown = caption if len(caption) <= CAPTION_SHOWN else caption[:CAPTION_SHOWN] + "..."
                long.append(Example(i, r.img_path, f"{tokens} tokens: {shown!r}"))
    if not long:
        return []
    kept = text_length - SPECIAL_TOKENS
    message = (f"{files.annotation}: {len(long)} of {total} captions are longer than text_length = {text_length} "
               f"tokens (SOT + BPE tokens + EOT): training and retrieval see their first {kept} BPE tokens only; "
               "shorten them where the end matters (pretrained CLIP fixes text_length at 77)")
    return [_finding(WARNING, LONG_CAPTION, message, len(long), long)]


def _phrase_source(annotation: Annotation, records: Sequence[Indexed]) -> Annotation:
    """The annotation the phrases are looked up for: with invalid records, its valid part only.

    A phrase copy describes a whole annotation file; with records left out it no longer matches, so the valid
    records' phrases come from their own field or from extraction.
    """
    if len(records) == len(annotation.records):
        return annotation
    raws = [annotation.records[i] for i, _ in records]
    return Annotation(annotation.path, raws, hashlib.sha256(json.dumps(raws).encode("utf-8")).hexdigest())


def phrase_findings(files: DatasetFiles, annotation: Annotation, records: Sequence[Indexed], backend: str,
                    min_word_len: int) -> list[Finding]:
    """Training captions where AQA finds no phrase to mask and masks a random word (method §6.1 steps 2, 3, 5)."""
    source = _phrase_source(annotation, records)
    with_phrases = attach_phrases(files, source, [r for _, r in records], backend, write=False)
    missed, total = [], 0
    for (i, _), r in zip(records, with_phrases):
        if r.split != TRAIN_SPLIT:
            continue
        for caption, phrases in zip(r.captions, r.phrases):
            total += 1
            if not any(is_valid_phrase(p, min_word_len) and find_occurrences(caption, p) for p in phrases):
                missed.append(Example(i, r.img_path, f"{caption!r}, phrases {list(phrases)}"))
    if not missed:
        return []
    message = (f"{files.annotation}: {len(missed)} of {total} training captions have no attribute phrase AQA can "
               f"mask (none with words of {min_word_len}+ characters that occurs as whole words in the caption): "
               "AQA masks a random word of them instead; describe the attributes (\"red coat\") or give "
               "cap_noun_phrases")
    return [_finding(WARNING, NO_PHRASE, message, len(missed), missed)]


def diagnose(name: str, root_dir: str | os.PathLike, annotation_file: str | None = None,
             text_length: int = DEFAULT_CONTEXT_LENGTH, phrase_backend: str = "pattern",
             min_word_len: int | None = None, workers: int | None = None) -> Report:
    """Check dataset ``name`` under ``root_dir``; a missing folder or annotation file raises DatasetError.

    ``min_word_len`` (method §6.1 step 2) defaults to the configs' ``sgiha.min_word_len``.
    """
    if min_word_len is None:
        min_word_len = load_config().sgiha.min_word_len
    files = dataset_files(name, root_dir, annotation_file)
    check_backend(phrase_backend)  # before decoding thousands of images
    bench = get_benchmark(name)
    published = dict(bench.published) or None
    try:
        annotation = read_annotation(files.annotation)
    except DatasetError as exc:  # not JSON, not a list of records, unreadable: nothing more to check
        finding = _finding(ERROR, ANNOTATION, str(exc), 1, [])
        return Report(files.name, str(files.annotation), {}, published, 0, [finding])
    records, findings = validate_records(files, annotation.records)
    counts = split_counts([r for _, r in records])
    checked, found = image_findings(files, records, workers or default_workers())
    findings += found
    findings += overlap_findings(files, records)
    findings += older_release_findings(files, bench.older_releases, counts)
    findings += duplicate_findings(files, records)
    findings += long_caption_findings(files, records, text_length)
    findings += phrase_findings(files, annotation, records, phrase_backend, min_word_len)  # errors came first
    return Report(files.name, str(files.annotation), counts, published, checked, findings)


def _place(example: Example) -> str:
    """'record 3, <image path>: ' (the parts the example has)."""
    parts = [f"record {example.record}"] if example.record is not None else []
    parts += [example.image] if example.image else []
    return f"{', '.join(parts)}: " if parts else ""


def format_report(report: Report) -> str:
    """The human-readable report: the statistics table, then each finding with its first records."""
    lines = [f"{report.dataset}: {report.annotation}", str(statistics_table(report.counts, report.published))]
    if report.published is None:
        lines.append("(no published counts: not one of the benchmarks)")
    lines.append(f"{report.images_checked} image files opened and decoded")
    for finding in report.findings:
        lines.append(f"{finding.severity} [{finding.code}] {finding.message}")
        lines += [f"    {_place(ex)}{ex.detail}" for ex in finding.examples]
        if finding.count > len(finding.examples) and finding.examples:
            lines.append(f"    ... ({finding.count} in all)")
    n_errors, n_warnings = len(report.of(ERROR)), len(report.of(WARNING))
    lines.append(f"{n_errors} error(s), {n_warnings} warning(s)" if report.findings else "no problems found")
    return "\n".join(lines)

