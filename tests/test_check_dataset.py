"""The dataset doctor (datasets/doctor.py, tools/check_dataset.py): clean datasets pass, each planted fault is found."""
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets import doctor
from datasets.bases import PHRASES_FIELD
from datasets.doctor import diagnose
from datasets.phrases import extract_phrases
from datasets.toy import CUSTOM_ANNOTATION, make_toy_dataset
from tests.conftest import TOY_SIZES
from tests.test_datasets import LAYOUTS, cuhk_record, fabricate, rstp_record
from tools.check_dataset import main

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "check_dataset.py"
WORKERS = 2


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def independent_counts(annotation: Path) -> dict[str, tuple[int, int, int]]:
    """(ids, images, captions) per split, counted straight from the JSON."""
    counts = {}
    for split in ("train", "val", "test"):
        records = [r for r in json.loads(annotation.read_text()) if r["split"] == split]
        if records:
            counts[split] = (len({r["id"] for r in records}), len(records), sum(len(r["captions"]) for r in records))
    return counts


def only(report: doctor.Report, code: str) -> doctor.Finding:
    found = [f for f in report.findings if f.code == code]
    assert len(found) == 1, [f.code for f in report.findings]
    return found[0]


def codes(report: doctor.Report) -> set[str]:
    return {f.code for f in report.findings}


def noisy_jpeg() -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (64, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["CUHK-PEDES", "ICFG-PEDES", "RSTPReid", "custom"])
def test_clean_dataset_passes_with_published_counts(toy_root, tmp_path, name):
    if name == "custom":
        root, annotation_file = tmp_path, f"custom/{CUSTOM_ANNOTATION}"
        make_toy_dataset(root, name, **TOY_SIZES)
        annotation = root / annotation_file
    else:
        root, annotation_file = toy_root, None
        annotation = root / name / LAYOUTS[name][0]
    before = snapshot(annotation.parent)
    report = diagnose(name, root, annotation_file, workers=WORKERS)
    assert report.findings == []
    assert report.counts == independent_counts(annotation)
    assert report.images_checked == sum(1 for p in annotation.parent.rglob("*.png"))
    published = {"CUHK-PEDES": {"val": (1000, 3078, 6158), "test": (1000, 3074, 6156)},
                 "ICFG-PEDES": {"train": (3102, 34674, 34674), "test": (1000, 19848, 19848)},
                 "RSTPReid": {"train": (3701, 18505, 37010), "test": (200, 1000, 2000)}}
    if name == "custom":
        assert report.published is None
    else:
        assert report.published.items() >= published[name].items()
    assert snapshot(annotation.parent) == before  # nothing written, no phrase copy


def test_missing_image(tmp_path):
    folder = fabricate(tmp_path, "CUHK-PEDES")
    (folder / "imgs" / "a/3_0.png").unlink()
    report = diagnose("CUHK-PEDES", tmp_path, workers=WORKERS)
    finding = only(report, doctor.MISSING_IMAGE)
    assert finding.severity == doctor.ERROR and finding.count == 1
    assert str(folder / "reid_raw.json") in finding.message and "1 of 6 image files" in finding.message
    assert [(e.record, e.image) for e in finding.examples] == [(1, str(folder / "imgs" / "a/3_0.png"))]
    assert report.has_errors and doctor.UNREADABLE_IMAGE not in codes(report)


def test_truncated_jpeg_is_decoded_and_found(tmp_path):
    records = [cuhk_record("train", 1, "intact.jpg", ["A man in a red coat."]),
               cuhk_record("train", 2, "cut.jpg", ["A woman in blue jeans."]),
               cuhk_record("test", 3, "test.jpg", ["A green hat."])]
    folder = fabricate(tmp_path, "CUHK-PEDES", records=records)
    data = noisy_jpeg()
    (folder / "imgs" / "intact.jpg").write_bytes(data)
    (folder / "imgs" / "cut.jpg").write_bytes(data[: len(data) // 2])  # the file exists, its header reads
    report = diagnose("CUHK-PEDES", tmp_path, workers=WORKERS)
    finding = only(report, doctor.UNREADABLE_IMAGE)
    assert finding.count == 1 and [e.record for e in finding.examples] == [1]
    assert "truncated" in finding.examples[0].detail
    assert doctor.MISSING_IMAGE not in codes(report)


def test_every_invalid_record_listed_and_valid_ones_still_checked(tmp_path):
    records = [cuhk_record("train", 1, "a.png", ["A man in a red coat."]),
               cuhk_record("train", 2, "b.png", ["A woman in blue jeans.", "5"]) | {"captions": ["A woman.", 5]},
               cuhk_record("train", 3, "c.png", ["A green hat."]),
               {k: v for k, v in cuhk_record("train", 4, "d.png", ["A red bag."]).items() if k != "id"},
               cuhk_record("dev", 5, "e.png", ["A black coat."]),
               cuhk_record("test", 6, "f.png", ["A white shirt."])]
    folder = fabricate(tmp_path, "CUHK-PEDES", records=records)
    (folder / "imgs" / "c.png").unlink()  # a valid record's missing image is still reported
    report = diagnose("CUHK-PEDES", tmp_path, workers=WORKERS)
    finding = only(report, doctor.INVALID_RECORD)
    assert finding.count == 3 and "3 of 6 records" in finding.message
    assert [e.record for e in finding.examples] == [1, 3, 4]
    details = [e.detail for e in finding.examples]
    assert "caption 1 is int" in details[0] and "missing field(s) ['id']" in details[1]
    assert "unknown split 'dev'" in details[2]
    assert report.counts == {"train": (2, 2, 2), "test": (1, 1, 1)}
    assert [e.record for e in only(report, doctor.MISSING_IMAGE).examples] == [2]


def test_identity_in_train_and_test(tmp_path):
    _, make, _ = LAYOUTS["RSTPReid"]
    records = [make("train", 7, "a.png", ["A man in a red coat."]), make("train", 3, "b.png", ["A green hat."]),
               make("test", 3, "c.png", ["A woman in blue jeans."]), make("test", 9, "d.png", ["A red bag."])]
    fabricate(tmp_path, "RSTPReid", records=records)
    report = diagnose("RSTPReid", tmp_path, workers=WORKERS)
    finding = only(report, doctor.SHARED_ID)
    assert finding.severity == doctor.ERROR and finding.count == 1
    assert [(e.record, e.detail) for e in finding.examples] == [(2, "id 3 in test, also in train")]
    assert doctor.SHARED_IMAGE not in codes(report)


def test_image_in_train_and_val(tmp_path):
    folder = fabricate(tmp_path, "CUHK-PEDES", records=[
        cuhk_record("train", 7, "a/7_0.png", ["A man in a red coat."]),
        cuhk_record("val", 8, "a/./7_0.png", ["A woman in blue jeans."]),  # the same file, spelt differently
        cuhk_record("test", 9, "t.png", ["A green hat."])])
    report = diagnose("CUHK-PEDES", tmp_path, workers=WORKERS)
    finding = only(report, doctor.SHARED_IMAGE)
    assert finding.severity == doctor.ERROR and finding.count == 1
    assert [(e.record, e.image) for e in finding.examples] == [(1, str(folder / "imgs" / "a/./7_0.png"))]
    assert doctor.SHARED_ID not in codes(report)


def write_rstpreid(root: Path, ids: dict[str, int]) -> None:
    """An RSTPReid annotation with these identities per split (one record each, images shared within a split)."""
    folder = root / "RSTPReid"
    (folder / "imgs").mkdir(parents=True)
    records, pid = [], 1
    for split, n in ids.items():
        Image.new("RGB", (4, 8)).save(folder / "imgs" / f"{split}.png")
        for _ in range(n):
            captions = [f"Person {pid} wears a red coat.", f"Person {pid} has a green hat."]
            records.append(rstp_record(split, pid, f"{split}.png", captions)
                           | {PHRASES_FIELD: [["red coat"], ["green hat"]]})
            pid += 1
    (folder / "data_captions.json").write_text(json.dumps(records))


@pytest.mark.parametrize("ids,older", [({"train": 3901, "val": 100, "test": 100}, True),
                                       ({"train": 3701, "val": 200, "test": 200}, False)])
def test_rstpreid_older_split_warned(tmp_path, ids, older):
    write_rstpreid(tmp_path, ids)
    report = diagnose("RSTPReid", tmp_path, workers=WORKERS)
    assert report.counts["train"] == (ids["train"], ids["train"], 2 * ids["train"])
    assert not report.has_errors
    if older:
        finding = only(report, doctor.OLDER_RELEASE)
        assert finding.severity == doctor.WARNING
        assert "3,901 / 100 / 100" in finding.message and "3,701 / 200 / 200" in finding.message
        assert "data_captions.json" in finding.message
    else:
        assert report.findings == []


def test_caption_under_two_ids(tmp_path):
    fabricate(tmp_path, "RSTPReid", records=[
        rstp_record("train", 7, "a.png", ["A man in a RED coat.", "A green hat."]),
        rstp_record("train", 3, "b.png", ["a man  in a red coat. ", "A red bag."]),
        rstp_record("test", 9, "c.png", ["A woman in blue jeans.", "a woman in blue JEANS."])])  # one id: fine
    report = diagnose("RSTPReid", tmp_path, workers=WORKERS)
    finding = only(report, doctor.DUPLICATE_CAPTION)
    assert finding.severity == doctor.WARNING and finding.count == 1
    assert finding.examples[0].record == 0 and "under ids 3, 7" in finding.examples[0].detail
    assert not report.has_errors


def test_caption_longer_than_text_length(tmp_path, tokenizer):
    fitting = "a man in a red coat"  # 6 BPE tokens + SOT + EOT = 8
    too_long = "A man in a red coat."  # the full stop is a 7th token
    assert len(tokenizer.encode(fitting)) == 6 and len(tokenizer.encode(too_long)) == 7
    fabricate(tmp_path, "CUHK-PEDES", records=[
        cuhk_record("train", 1, "a.png", [fitting, too_long]), cuhk_record("test", 2, "b.png", ["A green hat."])])
    report = diagnose("CUHK-PEDES", tmp_path, text_length=8, workers=WORKERS)
    finding = only(report, doctor.LONG_CAPTION)
    assert finding.severity == doctor.WARNING and finding.count == 1 and "1 of 3 captions" in finding.message
    assert finding.examples[0].detail.startswith("9 tokens")
    assert doctor.LONG_CAPTION not in codes(diagnose("CUHK-PEDES", tmp_path, text_length=9, workers=WORKERS))


def test_caption_without_attribute_phrase(tmp_path):
    assert extract_phrases("Walking.") == []
    folder = fabricate(tmp_path, "CUHK-PEDES", records=[
        cuhk_record("train", 1, "a.png", ["A man in a red coat.", "Walking."]),
        cuhk_record("train", 2, "b.png", ["A woman in blue jeans."]),
        cuhk_record("test", 3, "c.png", ["Standing."])])  # evaluation captions never reach AQA
    before = snapshot(folder)
    report = diagnose("CUHK-PEDES", tmp_path, workers=WORKERS)
    finding = only(report, doctor.NO_PHRASE)
    assert finding.severity == doctor.WARNING and finding.count == 1 and "1 of 3 training" in finding.message
    assert finding.examples[0].record == 0 and "'Walking.'" in finding.examples[0].detail
    assert snapshot(folder) == before and not (folder / "reid_raw_noun.json").exists()


def test_phrases_come_from_a_matching_copy(tmp_path):
    """A copy whose records are the annotation's is read as training reads it: its phrases, not extraction's."""
    folder = fabricate(tmp_path, "CUHK-PEDES")
    records = json.loads((folder / "reid_raw.json").read_text())
    copy = [r | {PHRASES_FIELD: [["red coat"] if "red coat" in c.lower() else ["zzz"] for c in r["captions"]]}
            for r in records]
    (folder / "reid_raw_noun.json").write_text(json.dumps(copy))
    before = snapshot(folder)
    finding = only(diagnose("CUHK-PEDES", tmp_path, workers=WORKERS), doctor.NO_PHRASE)
    train_without = [c for r in records if r["split"] == "train" for c in r["captions"] if "red coat" not in c.lower()]
    assert finding.count == len(train_without) == 3  # "A green hat." has a phrase, but not in the copy
    assert snapshot(folder) == before


@pytest.mark.parametrize("text,fragment", [("[{", "not valid JSON"), ('{"a": 1}', "expected a JSON list")])
def test_annotation_not_a_json_list(tmp_path, text, fragment):
    folder = fabricate(tmp_path, "ICFG-PEDES")
    (folder / "ICFG-PEDES.json").write_text(text)
    report = diagnose("ICFG-PEDES", tmp_path, workers=WORKERS)
    finding = only(report, doctor.ANNOTATION)
    assert report.has_errors and str(folder / "ICFG-PEDES.json") in finding.message and fragment in finding.message


def test_config_file_gives_the_settings(tmp_path, capsys):
    make_toy_dataset(tmp_path, "custom", **TOY_SIZES)
    config = tmp_path / "mine.yaml"
    config.write_text(f"dataset_name: custom\nroot_dir: {tmp_path}\nannotation_file: custom/{CUSTOM_ANNOTATION}\n"
                      "text_length: 8\n")
    assert main(["--config_file", str(config), "--workers", "1"]) == 0  # warnings only
    out = capsys.readouterr().out
    assert f"warning [{doctor.LONG_CAPTION}]" in out and "no published counts" in out


def start_tool(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(TOOL), "--workers", str(WORKERS), *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate()
    return process.returncode, out, err


@pytest.mark.slow
def test_cli_exit_statuses_and_json(toy_root, tmp_path):
    folder = fabricate(tmp_path, "CUHK-PEDES")
    (folder / "imgs" / "b/12_0.png").unlink()
    # The three runs overlap: most of each is the interpreter importing torch.
    clean = start_tool("--root_dir", str(toy_root), "--dataset_name", "CUHK-PEDES")
    broken = start_tool("--root_dir", str(tmp_path), "--dataset_name", "CUHK-PEDES", "--json")
    absent = start_tool("--root_dir", str(tmp_path / "nowhere"), "--dataset_name", "RSTPReid")

    status, out, err = finish(clean)
    assert status == 0, err
    val_row = next(line for line in out.splitlines() if line.startswith("|") and "val" in line)
    assert [c.strip() for c in val_row.strip("|").split("|")] == ["val", "4", "8", "16", "1000", "3078", "6158"]
    assert "no problems found" in out

    status, out, err = finish(broken)
    assert status == 1, err
    report = json.loads(out)
    assert report["errors"] == 1 and report["splits"]["train"] == {"ids": 3, "images": 4, "captions": 6}
    assert report["published"]["train"] == {"ids": 11003, "images": 34054, "captions": 68108}
    missing = [f for f in report["findings"] if f["code"] == doctor.MISSING_IMAGE]
    assert missing[0]["severity"] == "error" and missing[0]["examples"][0]["record"] == 3

    status, out, err = finish(absent)
    assert status == 2 and out == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert str(tmp_path / "nowhere" / "RSTPReid") in err
