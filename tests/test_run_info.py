"""run_info.json (issue 33): what a training run and an evaluation record about what made them, checked against
independent sources (git itself, hashlib, the annotation's split sizes); no git, no repository and no GPU are
said in the file, never an error."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import utils.run_info as run_info
from datasets.reader import read_benchmark
from tests.tiny_run import DEMO, load_test_script
from utils.config import load_config
from utils.run_info import DIFF_FILE, RUN_INFO_FILE, code_state, collect_run_info, file_record, file_sha256, machine

HAS_GIT = shutil.which("git") is not None
needs_git = pytest.mark.skipif(not HAS_GIT, reason="git is not installed")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def make_repo(folder: Path) -> Path:
    """A git repository with one commit of one file."""
    folder.mkdir()
    _git(folder, "init", "-q")
    (folder / "model.py").write_text("WIDTH = 64\n")
    _git(folder, "add", "model.py")
    _git(folder, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    return folder


def test_file_sha256_is_the_hash_of_the_bytes_and_follows_a_change(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(os.urandom(3 * run_info.HASH_CHUNK_BYTES + 5))  # several chunks and a partial one
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_bytes(b"other weights")
    assert file_sha256(path) == hashlib.sha256(b"other weights").hexdigest()  # size and mtime key the cache


def test_file_record_says_why_there_is_no_file(tmp_path):
    assert file_record(None, "random weights") == {"path": None, "sha256": None, "note": "random weights"}
    (tmp_path / "w.pt").write_bytes(b"w")
    assert file_record(tmp_path / "w.pt", "")["sha256"] == hashlib.sha256(b"w").hexdigest()


@needs_git
def test_code_state_of_a_clean_then_changed_repository(tmp_path):
    repo = make_repo(tmp_path / "repo")
    clean, diff = code_state(repo)
    assert clean["commit"] == _git(repo, "rev-parse", "HEAD").strip()
    assert clean["dirty"] is False and diff == "" and clean["untracked"] == [] and clean["diff_file"] is None
    (repo / "model.py").write_text("WIDTH = 128\n")
    (repo / "notes.txt").write_text("new")
    changed, diff = code_state(repo)
    assert changed["commit"] == clean["commit"] and changed["dirty"] is True
    assert "-WIDTH = 64" in diff and "+WIDTH = 128" in diff
    assert changed["diff_file"] == DIFF_FILE and changed["untracked"] == ["notes.txt"]
    assert changed["diff_sha256"] == hashlib.sha256(diff.encode()).hexdigest()


@needs_git
def test_a_folder_outside_any_repository_is_said(tmp_path):
    record, diff = code_state(tmp_path)
    assert record["commit"] is None and "not a git repository" in record["note"] and diff == ""


def test_missing_git_is_said(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable anywhere on it
    record, diff = code_state(tmp_path)
    assert record == {"repository": str(tmp_path), "commit": None, "note": "git is not installed"} and diff == ""


def test_no_gpu_is_said(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    record = machine(torch.device("cpu"), 1)
    assert record["gpu_count"] == 0 and record["gpus"] == [] and "no GPU" in record["note"]


def test_collected_record_holds_every_field(tmp_path):
    cfg = load_config(DEMO, {"seed": 7, "amp": "auto"})
    info, _ = collect_run_info(cfg, torch.device("cpu"), 1, {"annotation_sha256": "x"}, {}, ["train.py", "--a b"],
                               root=tmp_path)
    assert set(info) >= {"command", "code", "environment", "machine", "precision", "seed", "data", "weights"}
    assert info["command"].endswith("train.py '--a b'")  # quoted as a shell would need it
    assert set(info["environment"]) >= {"python", "torch", "cuda", "cudnn", "open_clip_torch", "numpy"}
    assert info["environment"]["torch"] == torch.__version__
    assert info["precision"] == {"amp": "none", "reason": "cpu device"} and info["seed"] == 7
    assert info["machine"]["world_size"] == 1


def test_a_training_run_records_what_made_it(tiny_run, tiny_toy):
    info = json.loads((tiny_run / RUN_INFO_FILE).read_text())
    benchmark = read_benchmark("CUHK-PEDES", tiny_toy, verify_images=False)
    annotation = benchmark.annotation
    assert info["data"]["annotation_sha256"] == hashlib.sha256(annotation.read_bytes()).hexdigest()
    assert info["data"]["splits"]["test"] == {"ids": len(set(benchmark.eval_splits["test"].image_pids)),
                                              "images": len(benchmark.eval_splits["test"].img_paths),
                                              "captions": len(benchmark.eval_splits["test"].captions)}
    assert info["data"]["splits"]["train"]["ids"] == benchmark.num_classes
    assert info["weights"]["pretrained"]["sha256"] is None  # the demo trains from random weights
    assert "random" in info["weights"]["pretrained"]["note"]
    assert info["precision"]["amp"] == "none" and info["seed"] == 42
    if HAS_GIT and info["code"]["commit"]:
        assert info["code"]["commit"] == _git(run_info.REPO_ROOT, "rev-parse", "HEAD").strip()
        assert info["code"]["dirty"] == (tiny_run / DIFF_FILE).is_file()


def test_test_py_records_its_own_process_next_to_the_scores(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / tiny_run.name)
    result = load_test_script().main(["--config_file", str(run)])
    written = json.loads((run / "test_results.json").read_text())
    assert written["run_info"] == result["run_info"]
    assert written["run_info"]["weights"]["checkpoint"]["sha256"] == hashlib.sha256(
        (run / "best.pth").read_bytes()).hexdigest()
    assert written["run_info"]["data"] == json.loads((run / RUN_INFO_FILE).read_text())["data"]
    assert json.loads((run / RUN_INFO_FILE).read_text()) == json.loads((tiny_run / RUN_INFO_FILE).read_text())
