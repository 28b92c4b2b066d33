"""Your own data in the generic format (datasets/custom.py): read, trained, tested, checked, searched."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import train as train_script
from datasets import DatasetError, read_benchmark
from datasets.doctor import diagnose
from datasets.toy import CUSTOM_ANNOTATION, make_toy_dataset
from tests.tiny_run import load_test_script, tiny_args
from tools.search import main as search
from tools.visualize_test import main as visualize_test

ANNOTATION = f"custom/{CUSTOM_ANNOTATION}"


@pytest.fixture(scope="module")
def own_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("own")
    make_toy_dataset(root, "custom", num_train_ids=16, num_val_ids=4, num_test_ids=6, images_per_id=2,
                     image_size=[64, 32], seed=5)
    return root


def test_reader_paths_splits_and_phrase_copy(own_data: Path, tmp_path: Path):
    data = read_benchmark("custom", own_data, need_phrases=True, annotation_file=ANNOTATION)
    folder = own_data / "custom"
    assert data.num_classes == 16 and len(data.train) == 16 * 2 * 2 and set(data.eval_splits) == {"val", "test"}
    assert data.train[0].img_path.startswith(str(folder / "images" / "train"))  # relative to the annotation's folder
    assert all(s.phrases for s in data.train)
    assert (folder / "annotations_noun.json").is_file()  # the phrase copy beside the annotation
    # absolute image paths, an annotation given by absolute path, ids of any integer
    records = json.loads((folder / CUSTOM_ANNOTATION).read_text())
    for i, record in enumerate(records):
        record["img_path"] = str(folder / record["img_path"])
        record["id"] = -record["id"] * 10 ** 12
    annotation = tmp_path / "elsewhere.json"
    annotation.write_text(json.dumps(records))
    again = read_benchmark("custom", "/nonexistent", annotation_file=str(annotation))
    assert [s.img_path for s in again.train] == [s.img_path for s in data.train]
    assert min(again.eval_splits["test"].image_pids) < -10 ** 12


def test_without_train_split_or_annotation_file(own_data: Path, tmp_path: Path):
    records = [r for r in json.loads((own_data / ANNOTATION).read_text()) if r["split"] != "train"]
    (tmp_path / "a.json").write_text(json.dumps(records))
    with pytest.raises(DatasetError, match=r"a.json: no record has split 'train'"):
        read_benchmark("custom", tmp_path, annotation_file="a.json")
    with pytest.raises(DatasetError, match=r"b.json: annotation file not found"):
        read_benchmark("custom", tmp_path, annotation_file="b.json")


@pytest.mark.slow
def test_train_test_check_and_search(own_data: Path, tmp_path: Path):
    args = ["--dataset_name", "custom", "--annotation_file", ANNOTATION]
    run_dir = train_script.main(tiny_args(own_data, tmp_path / "logs", *args))
    assert run_dir.parent == tmp_path / "logs" / "custom"
    result = load_test_script().main(["--config_file", str(run_dir / "configs.yaml")])
    assert result["dataset"] == "custom" and 0 <= result["metrics"]["R1"] <= 100
    assert json.loads((run_dir / "test_results.json").read_text()) == result
    report = diagnose("custom", own_data, annotation_file=ANNOTATION, workers=1)
    assert not [f for f in report.findings if f.severity == "error"]
    gallery = own_data / "custom" / "images" / "test"
    written = search(["--config_file", str(run_dir / "configs.yaml"), "--gallery", str(gallery),
                      "--query", "a man in a red shirt", "--out", str(tmp_path / "search.png"), "--topk", "3"])
    assert written == [tmp_path / "search.png"] and written[0].stat().st_size > 0
    pictures = visualize_test(["--config_file", str(run_dir / "configs.yaml"), "--num_queries", "2",
                               "--out_dir", str(tmp_path / "pictures")])
    assert len(pictures) == 2
