"""A checkpoint is data, never code: every entry point that reads one refuses a file carrying a pickled call
before any of it runs, and every file the project writes (or wrote before) loads under the weights-only rule."""
from __future__ import annotations

import os
import pickle
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import train
from inference.encoder import load_encoder
from model.pretrained import PretrainedError, read_state_dict
from tests.cli_checks import REPO, assert_one_error_line, snapshot
from tests.tiny_run import load_test_script
from tools import convert_checkpoint, export_open_clip, search, visualize_test
from utils import seed
from utils.checkpoint import UnsafeCheckpointError, load_checkpoint
from utils.cli import USER_ERROR_EXIT, run_cli
from utils.runs import CONFIG_FILE

REFUSAL = "holds objects other than weights and plain data"


class TouchOnLoad:
    """Unpickling this calls ``Path.touch(marker)``: the trace a payload that ran would leave."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


class ShellOnLoad(TouchOnLoad):
    """Unpickling this runs a shell command, as in the issue's measurement (a harmless one)."""

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> Path:
    """The shared finished 2-epoch tiny run (best.pth, last.pth, last_prev.pth); read-only for the tests."""
    return tiny_run


def payload_copy(source: Path, target: Path, marker: Path, key: str = "epoch", cls: type = TouchOnLoad) -> Path:
    """``source``'s checkpoint with its ``key`` replaced by a pickled call that would create ``marker``."""
    state = load_checkpoint(source)
    state[key] = cls(marker)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, target)
    return target


def cli_error(main: Callable[[list[str]], Any], argv: list[str], capsys) -> str:
    """The one 'error:' line of ``main(argv)`` run as its command runs it, which must end with status 2."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as ended:
        run_cli(lambda: main(argv))
    assert ended.value.code == USER_ERROR_EXIT
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, lines
    return lines[0]


def assert_refused(line: str, path: Path, marker: Path) -> None:
    assert str(path) in line and REFUSAL in line, line
    assert not marker.exists(), "the pickled call ran"


def test_test_py_refuses_a_payload_checkpoint(run, tmp_path, capsys):
    marker = tmp_path / "ran"
    bad = payload_copy(run / "best.pth", tmp_path / "download" / "best.pth", marker, cls=ShellOnLoad)
    line = cli_error(load_test_script().main, ["--config_file", str(run / CONFIG_FILE), "--checkpoint", str(bad),
                                               "--out_dir", str(tmp_path / "eval")], capsys)
    assert_refused(line, bad, marker)
    assert not (tmp_path / "eval").exists()


def test_search_refuses_a_payload_checkpoint(run, tmp_path, capsys):
    marker, gallery = tmp_path / "ran", tmp_path / "gallery"
    gallery.mkdir()
    bad = payload_copy(run / "best.pth", tmp_path / "paper_best.pth", marker)
    line = cli_error(search.main, ["--config_file", str(run / CONFIG_FILE), "--checkpoint", str(bad), "--gallery",
                                   str(gallery), "--query", "a man", "--out", str(tmp_path / "r.png")], capsys)
    assert_refused(line, bad, marker)


def test_export_refuses_a_payload_checkpoint(run, tmp_path, capsys):
    marker = tmp_path / "ran"
    bad = payload_copy(run / "best.pth", tmp_path / "paper_best.pth", marker, key="model")
    line = cli_error(export_open_clip.main, ["--config_file", str(run / CONFIG_FILE), "--checkpoint", str(bad),
                                             "--out", str(tmp_path / "export")], capsys)
    assert_refused(line, bad, marker)
    assert not (tmp_path / "export").exists()


def test_visualize_test_refuses_a_payload_checkpoint(run, tmp_path, capsys):
    marker = tmp_path / "ran"
    bad = payload_copy(run / "best.pth", tmp_path / "paper_best.pth", marker, cls=ShellOnLoad)
    line = cli_error(visualize_test.main, ["--config_file", str(run / CONFIG_FILE), "--checkpoint", str(bad),
                                           "--out_dir", str(tmp_path / "pictures")], capsys)
    assert_refused(line, bad, marker)
    assert not (tmp_path / "pictures").exists()


def test_load_encoder_refuses_a_payload_checkpoint_and_run_folder(run, tmp_path):
    marker = tmp_path / "ran"
    bad = payload_copy(run / "best.pth", tmp_path / "paper_best.pth", marker)
    with pytest.raises(UnsafeCheckpointError) as refused:
        load_encoder(bad, device="cpu")
    assert_refused(str(refused.value), bad, marker)
    folder = tmp_path / "colleague_run"
    folder.mkdir()
    shutil.copy(run / CONFIG_FILE, folder / CONFIG_FILE)
    bad = payload_copy(run / "best.pth", folder / "best.pth", marker, cls=ShellOnLoad)
    with pytest.raises(UnsafeCheckpointError) as refused:
        load_encoder(folder, device="cpu")
    assert_refused(str(refused.value), bad, marker)


def test_resume_refuses_a_payload_checkpoint_and_changes_nothing(run, tmp_path, capsys):
    marker, folder = tmp_path / "ran", tmp_path / "run"
    shutil.copytree(run, folder)
    bad = payload_copy(run / "last.pth", folder / "last.pth", marker, key="rng")
    before = snapshot(folder)
    line = cli_error(train.main, ["--resume", str(bad), "--num_epoch", "3"], capsys)
    assert_refused(line, bad, marker)
    assert "last_prev" not in line  # a refused file is not damaged: its copies are no fallback
    assert snapshot(folder) == before


def raw_pickle(state: dict, path: Path, protocol: int) -> Path:
    path.write_bytes(pickle.dumps(state, protocol=protocol))
    return path


# Every way a pickled call can be written into a .pth file: torch.save's archive (with torch's and a newer pickle
# protocol), torch's legacy format, and a bare pickle.dump of any protocol.
WRITERS = {
    "torch.save": lambda state, path: torch.save(state, path),
    "torch.save protocol 4": lambda state, path: torch.save(state, path, pickle_protocol=4),
    "legacy torch.save": lambda state, path: torch.save(state, path, _use_new_zipfile_serialization=False),
    **{f"pickle protocol {p}": (lambda state, path, p=p: raw_pickle(state, path, p)) for p in (0, 2, 4, 5)},
}


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("payload", [TouchOnLoad, ShellOnLoad])
def test_every_form_of_payload_is_refused_naming_what_it_holds(tmp_path, writer, payload):
    marker, path = tmp_path / "ran", tmp_path / "best.pth"
    WRITERS[writer]({"model": {"w": torch.ones(2)}, "epoch": payload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError) as refused:
        load_checkpoint(path)
    assert_refused(str(refused.value), path, marker)
    if writer.startswith("torch.save"):  # the archive every checkpoint is: torch's scan names every import
        assert ("pathlib" if payload is TouchOnLoad else "system") in str(refused.value)
    assert "\n" not in str(refused.value)


def test_garbage_is_unreadable_not_refused(tmp_path):
    """Bytes that are no pickle are reported as damaged, with no claim about objects in them."""
    path = tmp_path / "best.pth"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(Exception, match="not a readable PyTorch checkpoint") as failed:
        load_checkpoint(path)
    assert not isinstance(failed.value, UnsafeCheckpointError) and "weights_only" not in str(failed.value)


def test_every_file_a_run_writes_loads_weights_only(run, tmp_path):
    names = sorted(p.name for p in run.glob("*.pth"))
    assert names == ["best.pth", "last.pth", "last_prev.pth"]
    for name in names:
        state = torch.load(run / name, weights_only=True)
        assert state["epoch"] >= 1
    export = export_open_clip.main(["--config_file", str(run / CONFIG_FILE), "--out", str(tmp_path / "export")])
    assert load_file(str(export.weights))  # safetensors: tensors only, by format


def test_the_search_cache_loads_weights_only_and_a_payload_cache_only_costs_a_re_encode(run, tmp_path, capsys):
    gallery, cache, marker = tmp_path / "gallery", tmp_path / "gallery.cache.pt", tmp_path / "ran"
    gallery.mkdir()
    images = sorted((Path(load_checkpoint(run / "best.pth")["config"]["root_dir"])).rglob("*.png"))[:3]
    for image in images:
        shutil.copy(image, gallery / image.name)
    argv = ["--config_file", str(run / CONFIG_FILE), "--gallery", str(gallery), "--query", "a man",
            "--out", str(tmp_path / "r.png"), "--cache", str(cache)]
    search.main(argv)
    assert sorted(torch.load(cache, weights_only=True)["paths"]) == sorted(p.name for p in images)
    torch.save({"key": TouchOnLoad(marker), "paths": []}, cache)
    search.main(argv)
    assert not marker.exists()
    assert len(torch.load(cache, weights_only=True)["paths"]) == len(images)  # re-encoded and rewritten


def test_rng_states_round_trip_through_a_weights_only_load(tmp_path):
    """Every stream draws the same after restoring a saved-and-reloaded state as right after saving it."""
    seed.set_seed(7)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    path = tmp_path / "rng.pth"
    torch.save(seed.get_rng_states(), path)
    expected = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    seed.set_seed(8)
    seed.set_rng_states(torch.load(path, weights_only=True))
    assert (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist()) == expected


def old_last_pth(run: Path, target: Path) -> tuple[Path, tuple]:
    """last.pth as earlier versions wrote it: numpy's RNG state is np.random.get_state()'s tuple (with an ndarray)."""
    state = load_checkpoint(run / "last.pth")
    np.random.seed(11)
    np.random.standard_normal()
    old_numpy = np.random.get_state()
    state["rng"] = {**state["rng"], "numpy": old_numpy}
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, target)
    return target, old_numpy


def test_old_last_pth_is_refused_with_the_conversion_command(run, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    old, _ = old_last_pth(run, folder / "last.pth")
    line = cli_error(train.main, ["--resume", str(old), "--num_epoch", "3"], capsys)
    assert str(old) in line and REFUSAL in line
    assert f"python tools/convert_checkpoint.py --trust {old}" in line
    assert torch.load(run / "best.pth", weights_only=True)["epoch"] >= 1  # best.pth never held RNG states


def test_convert_checkpoint_makes_an_old_last_pth_resumable(run, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    old, old_numpy = old_last_pth(run, folder / "last.pth")
    line = cli_error(convert_checkpoint.main, [str(old)], capsys)
    assert "--trust" in line and str(old) in line
    convert_checkpoint.main(["--trust", str(old)])
    converted = torch.load(old, weights_only=True)
    seed.set_rng_states(converted["rng"])
    restored = np.random.get_state()
    assert restored[0] == old_numpy[0] and np.array_equal(restored[1], old_numpy[1])
    assert restored[2:] == old_numpy[2:]
    reference = load_checkpoint(run / "last.pth")
    for key in reference["model"]:
        assert torch.equal(converted["model"][key], reference["model"][key])
    resumed = train.main(["--resume", str(old), "--num_epoch", "3"])
    assert load_checkpoint(resumed / "last.pth")["epoch"] == 3


def test_convert_checkpoint_never_reads_a_file_holding_more_than_the_old_rng_state(run, tmp_path, capsys):
    """Even with --trust: an old last.pth that also carries a pickled call is refused, unread."""
    marker = tmp_path / "ran"
    old, _ = old_last_pth(run, tmp_path / "last.pth")
    state = torch.load(old, weights_only=False)  # the test's own file
    torch.save({**state, "history": ShellOnLoad(marker)}, old)
    line = cli_error(convert_checkpoint.main, ["--trust", str(old)], capsys)
    assert str(old) in line and "system" in line and not marker.exists()


@pytest.mark.slow
def test_test_py_command_prints_only_the_error_line(run, tmp_path):
    """As a command (no pytest warning capture): exit 2 and a single stderr line, not torch's warnings."""
    marker = tmp_path / "ran"
    bad = tmp_path / "best.pth"
    WRITERS["pickle protocol 4"]({"model": {}, "epoch": ShellOnLoad(marker)}, bad)
    result = subprocess.run([sys.executable, "test.py", "--config_file", str(run / CONFIG_FILE), "--checkpoint",
                             str(bad)], cwd=REPO, capture_output=True, text=True)
    assert_one_error_line(result, [str(bad), REFUSAL])
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not marker.exists()


def test_pretrain_path_refuses_a_payload_state_dict(tmp_path):
    """CLIP weights (pretrain_path) are read weights-only too (open_clip's loader), with the same line."""
    marker, path = tmp_path / "ran", tmp_path / "ViT-B-16.pt"
    torch.save({"visual.proj": torch.zeros(2), "logit_scale": ShellOnLoad(marker)}, path)
    with pytest.raises(PretrainedError) as refused:
        read_state_dict(path)
    assert_refused(str(refused.value), path, marker)


def test_convert_checkpoint_reads_only_archives_it_can_check_first(tmp_path, capsys):
    """A legacy-format file whose first refused object is numpy's RNG state could hide a call after it: refused."""
    marker, path = tmp_path / "ran", tmp_path / "last.pth"
    torch.save({"model": {}, "epoch": 1, "rng": {"numpy": np.random.get_state()}, "z": ShellOnLoad(marker)}, path,
               _use_new_zipfile_serialization=False)
    line = cli_error(convert_checkpoint.main, ["--trust", str(path)], capsys)
    assert str(path) in line and "not converted" in line and not marker.exists()
