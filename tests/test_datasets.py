"""Benchmark readers on fabricated files in each real format (method §2), and every bad-input error."""
import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from datasets import DatasetError, read_benchmark
from datasets.bases import PHRASES_FIELD

NOISY = "the man wears a \u00e9\u4e2d coat... <code>x=1;</code> \\x00 red red red"


def cuhk_record(split: str, pid: int, path: str, captions: list[str]) -> dict:
    return {"split": split, "captions": captions, "file_path": path,
            "processed_tokens": [c.lower().split() for c in captions], "id": pid}


def rstp_record(split: str, pid: int, path: str, captions: list[str]) -> dict:
    return {"id": pid, "img_path": path, "captions": captions, "split": split}


LAYOUTS = {  # name: (annotation file, record maker, splits)
    "CUHK-PEDES": ("reid_raw.json", cuhk_record, ("train", "val", "test")),
    "ICFG-PEDES": ("ICFG-PEDES.json", cuhk_record, ("train", "test")),
    "RSTPReid": ("data_captions.json", rstp_record, ("train", "val", "test")),
}


def fabricate(root: Path, name: str, annotation: str | None = None, records: list[dict] | None = None) -> Path:
    """Write a tiny benchmark: train ids 7, 3, 12 (image counts 2, 1, 1), one val/test id each."""
    file, make, splits = LAYOUTS[name]
    if records is None:
        records = [make("train", 7, "a/7_0.png", ["A man in a red coat.", "He wears a red coat."]),
                   make("train", 3, "a/3_0.png", ["A woman in blue jeans.", NOISY]),
                   make("train", 7, "a/7_1.png", ["Red coat, black shoes."]),
                   make("train", 12, "b/12_0.png", ["A green hat."])]
        records += [make(s, 100 + i, f"{s}/{i}.png", [f"{s} caption one.", f"{s} caption two."])
                    for i, s in enumerate(splits[1:])]
    folder = root / name
    for r in records:
        if "file_path" not in r and "img_path" not in r:
            continue
        path = folder / "imgs" / r.get("file_path", r.get("img_path"))
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 8)).save(path)
    (folder / (annotation or file)).write_text(json.dumps(records))
    return folder


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_reader_counts_reindexing_paths(tmp_path, name, caplog, tokenizer):
    folder = fabricate(tmp_path, name)
    with caplog.at_level(logging.INFO):
        data = read_benchmark(name, tmp_path)
    assert data.num_classes == 3
    assert [(s.pid, s.image_id) for s in data.train] == [(1, 0), (1, 0), (0, 1), (0, 1), (1, 2), (2, 3)]
    assert data.train[2].img_path == str(folder / "imgs" / "a/3_0.png")
    assert data.train[3].caption == NOISY and len(tokenizer(NOISY)) == 77
    assert set(data.eval_splits) == set(LAYOUTS[name][2][1:])
    test = data.eval_splits["test"]
    assert test.img_paths == [str(folder / "imgs" / "test" / f"{len(LAYOUTS[name][2]) - 2}.png")]
    assert test.captions == ["test caption one.", "test caption two."]
    assert test.caption_pids == test.image_pids * 2
    assert "captions" in caplog.text and "| train |" in caplog.text.replace("  ", " ")


def test_icfg_alternative_file_name(tmp_path):
    fabricate(tmp_path, "ICFG-PEDES", annotation="ICFG_PEDES.json")
    assert read_benchmark("ICFG-PEDES", tmp_path).num_classes == 3


@pytest.mark.parametrize("name,noun_file", [("CUHK-PEDES", "reid_raw_noun.json"),
                                            ("ICFG-PEDES", "ICFG-PEDES_noun.json"),
                                            ("RSTPReid", "data_captions_noun.json")])
def test_noun_copy_preferred_and_written_when_missing(tmp_path, name, noun_file):
    folder = fabricate(tmp_path, name)
    data = read_benchmark(name, tmp_path, need_phrases=True)
    assert data.train[0].phrases == ("red coat",)
    written = json.loads((folder / noun_file).read_text())
    assert written[0][PHRASES_FIELD] == [["red coat"], ["red coat"]]
    for record in written:  # a hand-made copy wins over extraction
        record[PHRASES_FIELD] = [[f"phrase {i}"] for i, _ in enumerate(record["captions"])]
    (folder / noun_file).write_text(json.dumps(written))
    data = read_benchmark(name, tmp_path, need_phrases=True)
    assert [s.phrases for s in data.train[:2]] == [("phrase 0",), ("phrase 1",)]


def test_phrases_field_in_main_file_is_read(tmp_path):
    records = [cuhk_record("train", 1, "x.png", ["a red coat"]) | {PHRASES_FIELD: [["my phrase"]]}]
    fabricate(tmp_path, "CUHK-PEDES", records=records)
    assert read_benchmark("CUHK-PEDES", tmp_path, need_phrases=True).train[0].phrases == ("my phrase",)
    assert not (tmp_path / "CUHK-PEDES" / "reid_raw_noun.json").exists()


def expect_error(root: Path, name: str, *fragments: str) -> None:
    with pytest.raises(DatasetError) as info:
        read_benchmark(name, root)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_missing_folder_and_file(tmp_path):
    expect_error(tmp_path, "RSTPReid", "dataset folder not found", "RSTPReid/imgs", "data_captions.json")
    (tmp_path / "ICFG-PEDES").mkdir()
    expect_error(tmp_path, "ICFG-PEDES", "ICFG-PEDES.json or ICFG_PEDES.json not found", "Expected layout")


def test_cuhk_caption_all_hint(tmp_path):
    (tmp_path / "CUHK-PEDES").mkdir()
    (tmp_path / "CUHK-PEDES" / "caption_all.json").write_text("[]")
    expect_error(tmp_path, "CUHK-PEDES", "caption_all.json", "reid_raw.json", "splits")


def test_invalid_json_and_not_a_list(tmp_path):
    folder = fabricate(tmp_path, "CUHK-PEDES")
    (folder / "reid_raw.json").write_text("[{")
    expect_error(tmp_path, "CUHK-PEDES", "reid_raw.json", "not valid JSON")
    (folder / "reid_raw.json").write_text('{"a": 1}')
    expect_error(tmp_path, "CUHK-PEDES", "reid_raw.json", "expected a JSON list")


@pytest.mark.parametrize("change,fragment", [
    (lambda r: r.pop("file_path"), "missing field(s) ['file_path']"),
    (lambda r: r.update(split="dev"), "unknown split 'dev'"),
    (lambda r: r.update(captions=[]), "non-empty list"),
    (lambda r: r.update(captions=["ok", "  "]), "non-empty string"),
    (lambda r: r.update(id="abc"), "'id' must be an integer"),
    (lambda r: r.update({PHRASES_FIELD: [["x"]]}), "list of 2 lists"),
])
def test_bad_records(tmp_path, change, fragment):
    records = [cuhk_record("train", 1, "x.png", ["a", "b"]), cuhk_record("train", 2, "y.png", ["c", "d"])]
    change(records[1])
    fabricate(tmp_path, "CUHK-PEDES", records=records)
    expect_error(tmp_path, "CUHK-PEDES", "reid_raw.json: record 1", fragment)


def test_icfg_has_no_val_split(tmp_path):
    records = [cuhk_record("train", 1, "x.png", ["a"]), cuhk_record("val", 2, "y.png", ["c"])]
    fabricate(tmp_path, "ICFG-PEDES", records=records)
    expect_error(tmp_path, "ICFG-PEDES", "unknown split 'val'", "['train', 'test']")


def test_missing_images_reported_before_training(tmp_path):
    folder = fabricate(tmp_path, "RSTPReid")
    for path in ("a/7_0.png", "a/3_0.png", "b/12_0.png"):
        (folder / "imgs" / path).unlink()
    expect_error(tmp_path, "RSTPReid", "3 of 6 image files do not exist", str(folder / "imgs" / "a/7_0.png"))


def test_unknown_dataset(tmp_path):
    expect_error(tmp_path, "Market-1501", "unknown dataset", "CUHK-PEDES")
