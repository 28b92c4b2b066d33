"""configs/demo_pretrained.yaml starts from a weights file the demo's first run builds (docs/experiments/demo.md
point 15, processor/pretrain_build.py): the build is the documented commands, runs once, and refuses what it cannot
do before any work; train.py never builds; pretrain_choice none never reads the file it names."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from model.build import build_model
from model.clip import CLIP
from model.open_clip_format import WEIGHTS_FILE
from model.pretrained import PretrainedError
from processor.pretrain_build import BUILD_RUNS, PretrainBuildError, needs_build
from utils.config import CONFIG_DIR, load_config

DEMO_PRETRAINED = CONFIG_DIR / "demo_pretrained.yaml"


def test_pretrain_choice_none_reads_no_weights_file(tmp_path):
    """--pretrain_choice none on a config that names a weights file trains from random weights (test_evaluate:
    zero-shot then has nothing to evaluate)."""
    weights_file = tmp_path / "weights.safetensors"
    cfg = load_config(DEMO_PRETRAINED, {"pretrain_choice": "none", "pretrain_path": str(weights_file)})
    torch.manual_seed(1)
    weights = CLIP.from_config(cfg).state_dict()
    save_file(weights, str(weights_file))
    torch.manual_seed(0)
    backbone = build_model(cfg, num_classes=8).backbone.state_dict()
    assert not any(torch.equal(backbone[k], weights[k]) for k in ("token_embedding.weight", "visual.proj"))


def test_demo_started_from_another_folder_fails_before_any_work(tmp_path, monkeypatch):
    """From another working directory the relative weights path names no file and the build recipe is not found
    either: one error naming the recipe it tried, and no toy dataset or build run made for a run that cannot start."""
    import demo

    monkeypatch.chdir(tmp_path)
    with pytest.raises(PretrainBuildError, match=f"demo.pretrain_build.config_file {tmp_path}/configs/"
                                                 f"demo_backbone.yaml: no such file.*{tmp_path}/data/demo_backbone/"
                                                 f"{WEIGHTS_FILE}"):
        demo.main(["--config_file", str(DEMO_PRETRAINED)])
    assert list(tmp_path.iterdir()) == []


def test_without_a_build_recipe_the_demo_fails_on_missing_weights_before_any_work(tmp_path, monkeypatch):
    """The demo builds only what its config names a recipe for."""
    import demo

    monkeypatch.chdir(tmp_path)
    with pytest.raises(PretrainedError, match=f"pretrain_path {tmp_path}/data/demo_backbone/.*no such file"):
        demo.main(["--config_file", str(DEMO_PRETRAINED), "--demo.pretrain_build.config_file", "null"])
    assert list(tmp_path.iterdir()) == []


def test_train_never_builds_and_says_how_the_demo_does(tmp_path, monkeypatch):
    """train.py on the demo's config before its backbone exists: one line naming the demo and the commands by hand,
    before any work."""
    import train

    monkeypatch.chdir(tmp_path)
    with pytest.raises(PretrainBuildError, match=f"pretrain_path {tmp_path}/data/demo_backbone/.*not built yet; "
                                                 f"the demo builds it .*bash run_demo.sh --config_file"):
        train.main(["--config_file", str(DEMO_PRETRAINED)])
    assert list(tmp_path.iterdir()) == []


def test_zero_shot_of_an_unbuilt_backbone_says_how_to_build_it(tmp_path, monkeypatch):
    """test.py --checkpoint pretrained on a fresh clone: the weights do not exist until the demo's first run."""
    from tests.tiny_run import load_test_script

    monkeypatch.chdir(CONFIG_DIR.parent)
    weights = tmp_path / WEIGHTS_FILE
    with pytest.raises(PretrainBuildError, match=f"pretrain_path {weights}: not built yet; the demo builds it .*"
                                                 f"bash run_demo.sh --config_file {DEMO_PRETRAINED}"):
        load_test_script().main(["--config_file", str(DEMO_PRETRAINED), "--checkpoint", "pretrained",
                                 "--pretrain_path", str(weights), "--output_dir", str(tmp_path / "out")])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("overrides, expected", [
    ({}, True),
    ({"pretrain_choice": "none"}, False),  # no weights read, none built
    ({"demo.pretrain_build.config_file": None}, False),  # no recipe: a missing file is an error (check_file)
])
def test_needs_build(tmp_path, overrides, expected):
    cfg = load_config(DEMO_PRETRAINED, {"pretrain_path": str(tmp_path / WEIGHTS_FILE), **overrides}, entry="demo")
    assert needs_build(cfg) is expected
    (tmp_path / WEIGHTS_FILE).write_bytes(b"")
    assert needs_build(cfg) is False  # built already


@pytest.mark.slow
def test_missing_weights_are_built_once_as_the_documented_commands_build_them(tmp_path, monkeypatch, capfd):
    """A shrunk demo_backbone.yaml as the recipe: the first demo trains it and exports its last checkpoint to
    pretrain_path, the same tensors as the header's manual export gives; the second demo reads them, no rebuild."""
    import demo
    from tests.test_demo import tiny_demo_args, tiny_recipe
    from tools import export_open_clip

    monkeypatch.chdir(tmp_path)
    args = tiny_demo_args(tiny_recipe(tmp_path))
    weights = tmp_path / "weights" / WEIGHTS_FILE
    demo.main(args)
    assert f"step 1/3: building the demo backbone {weights}" in capfd.readouterr().out
    (build,) = list((weights.parent / BUILD_RUNS).glob("*/CUHK-PEDES/*"))
    assert weights.is_file()
    export_open_clip.main(["--config_file", str(build), "--checkpoint", str(build / "last.pth"), "--out",
                           str(tmp_path / "manual"), "--half"])
    built, manual = load_file(str(weights)), load_file(str(tmp_path / "manual" / WEIGHTS_FILE))
    assert built.keys() == manual.keys() and all(torch.equal(built[k], manual[k]) for k in built)
    assert {v.dtype for v in built.values()} == {torch.float16}  # demo.pretrain_build.half
    demo.main(args)
    assert "building the demo backbone" not in capfd.readouterr().out
    assert list((weights.parent / BUILD_RUNS).glob("*/CUHK-PEDES/*")) == [build]
    assert len(list((tmp_path / "runs" / "CUHK-PEDES").iterdir())) == 2
