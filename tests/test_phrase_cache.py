"""The phrase copy (*_noun.json) is used only while it describes the current annotation file."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import datasets.phrase_cache as phrase_cache
import datasets.phrases as phrases
from datasets import DatasetError, read_benchmark
from datasets.bases import PHRASES_FIELD
from datasets.phrase_cache import provenance_path
from tests.test_datasets import cuhk_record, fabricate
from tools.extract_phrases import main as extract_cli

COPY = "reid_raw_noun.json"


def _phrases(root: Path) -> dict[str, tuple[str, ...]]:
    """Training caption -> its phrases, as a training run reads them."""
    return {s.caption: s.phrases for s in read_benchmark("CUHK-PEDES", root, need_phrases=True).train}


def _forbid_extraction(monkeypatch) -> None:
    def fail(caption, backend="pattern"):
        raise AssertionError(f"extracted {caption!r} although a valid copy exists")

    monkeypatch.setattr(phrase_cache, "extract_phrases", fail)


def _edit_annotation(folder: Path, change) -> None:
    path = folder / "reid_raw.json"
    records = json.loads(path.read_text())
    change(records)
    path.write_text(json.dumps(records))


def test_first_run_writes_the_copy_and_later_runs_read_it(tmp_path, monkeypatch):
    folder = fabricate(tmp_path, "CUHK-PEDES")
    first = _phrases(tmp_path)
    assert first["A man in a red coat."] == ("red coat",)
    assert (folder / COPY).is_file() and provenance_path(folder / COPY).is_file()
    _forbid_extraction(monkeypatch)
    assert _phrases(tmp_path) == first


def test_an_edited_caption_is_trained_with_its_new_phrases(tmp_path, caplog):
    folder = fabricate(tmp_path, "CUHK-PEDES")
    _phrases(tmp_path)
    _edit_annotation(folder, lambda records: records[0]["captions"].__setitem__(0, "A man in a blue jacket."))
    with caplog.at_level(logging.INFO):
        second = _phrases(tmp_path)
    assert "A man in a red coat." not in second and second["A man in a blue jacket."] == ("blue jacket",)
    assert f"rebuilding {folder / COPY}: reid_raw.json changed" in caplog.text
    written = json.loads((folder / COPY).read_text())
    assert written[0]["captions"][0] == "A man in a blue jacket." and written[0][PHRASES_FIELD][0] == ["blue jacket"]


def test_a_new_phrase_backend_or_extractor_re_extracts(tmp_path, monkeypatch, caplog):
    folder = fabricate(tmp_path, "CUHK-PEDES")
    _phrases(tmp_path)
    # a second backend (spaCy is not installed here): every caption gets one marker phrase
    monkeypatch.setitem(phrases.BACKENDS, "marker", lambda caption: ["marker"])
    monkeypatch.setitem(phrases.BACKEND_PACKAGES, "marker", ())
    with caplog.at_level(logging.INFO):
        data = read_benchmark("CUHK-PEDES", tmp_path, need_phrases=True, phrase_backend="marker")
    assert all(s.phrases == ("marker",) for s in data.train)
    assert "phrase_backend is 'marker', the copy was made with 'pattern'" in caplog.text
    monkeypatch.setattr(phrases, "EXTRACTOR_REVISION", phrases.EXTRACTOR_REVISION + 1)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        read_benchmark("CUHK-PEDES", tmp_path, need_phrases=True, phrase_backend="marker")
    assert "the phrase extractor changed" in caplog.text
    assert json.loads(provenance_path(folder / COPY).read_text())["phrase_backend"] == "marker"


def test_a_copy_from_elsewhere_is_used_only_if_it_describes_the_annotation(tmp_path, monkeypatch, caplog):
    folder = fabricate(tmp_path, "CUHK-PEDES")
    records = json.loads((folder / "reid_raw.json").read_text())
    authors = [{**r, PHRASES_FIELD: [[f"authors {i}"] for i, _ in enumerate(r["captions"])]} for r in records]
    (folder / COPY).write_text(json.dumps(authors))  # no provenance: a copy from elsewhere
    with monkeypatch.context() as patch:
        _forbid_extraction(patch)
        assert set(_phrases(tmp_path).values()) == {("authors 0",), ("authors 1",)}

    _edit_annotation(folder, lambda rs: rs[2].update(split="test"))  # a corrected split
    with caplog.at_level(logging.WARNING):
        fresh = _phrases(tmp_path)
    assert fresh["A man in a red coat."] == ("red coat",)
    assert "record 2: split 'train' in the copy, 'test' in the annotation" in caplog.text
    assert json.loads((folder / COPY).read_text()) == authors  # never overwritten without --force
    extract_cli(["--root_dir", str(tmp_path), "--dataset_name", "CUHK-PEDES", "--force"])
    assert json.loads((folder / COPY).read_text())[2]["split"] == "test"


def test_the_annotation_is_always_read_and_validated_first(tmp_path):
    folder = fabricate(tmp_path, "CUHK-PEDES")
    _phrases(tmp_path)
    (folder / "reid_raw.json").write_text("[{")  # broken after the copy was made
    with pytest.raises(DatasetError, match="reid_raw.json: not valid JSON"):
        _phrases(tmp_path)

    other = tmp_path / "other"
    records = [cuhk_record("train", 1, "x.png", ["A red coat."]), cuhk_record("train", 2, "y.png", ["  "])]
    folder = fabricate(other, "CUHK-PEDES", records=records)
    with pytest.raises(DatasetError, match=r"reid_raw.json: record 1: caption 0 is empty"):
        _phrases(other)
    assert not (folder / COPY).exists()  # nothing written for a file that fails validation


def test_an_unreadable_copy_is_an_error_naming_it(tmp_path, monkeypatch):
    fabricate(tmp_path, "CUHK-PEDES")
    _phrases(tmp_path)
    original = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if path.name == COPY:
            raise PermissionError(13, "Permission denied", str(path))
        return original(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(DatasetError, match=rf"{COPY}: cannot be read \(Permission denied\)"):
        _phrases(tmp_path)
