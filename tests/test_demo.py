"""The demo entry (demo.py, bash run_demo.sh; processor/demo.py, processor/pretrain_build.py): every mistake, the
backbone recipe's included, ends before anything is written; a run ends with where its results are; two demos
started at once build the backbone once, and a build killed half-way is built again to the same bytes."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datasets.bases import DatasetError
from model.open_clip_format import WEIGHTS_FILE
from processor.demo import split_overrides
from processor.pretrain_build import BUILD_LOG, BUILD_RUNS, PretrainBuildError
from tests.cli_checks import REPO
from utils.config import CONFIG_DIR, ConfigError, load_config

DEMO_PRETRAINED = str(CONFIG_DIR / "demo_pretrained.yaml")
DEMO = str(CONFIG_DIR / "demo.yaml")
SMALL_TOY = {"num_train_ids": 16, "num_val_ids": 4, "num_test_ids": 6, "images_per_id": 2}
WEIGHTS = Path("weights") / WEIGHTS_FILE  # relative: inside the test's working folder


def tiny_recipe(folder: Path, *lines: str) -> Path:
    """configs/demo_backbone.yaml shrunk to seconds: its own small toy, 2 epochs at batch 8."""
    recipe = folder / "backbone.yaml"
    toy = ", ".join(f"{k}: {v}" for k, v in SMALL_TOY.items())
    recipe.write_text("\n".join([f"_base_: {CONFIG_DIR / 'demo_backbone.yaml'}", "root_dir: bb_toy",
                                 f"demo: {{toy: {{generate_in: bb_toy, {toy}}}}}", "num_epoch: 2", "eval_period: 2",
                                 "batch_size: 8", "tensorboard: false", *lines]) + "\n", encoding="utf-8")
    return recipe


def tiny_demo_args(recipe: Path, *extra: str) -> list[str]:
    """configs/demo_pretrained.yaml shrunk to seconds, built from ``recipe``, everything under the working folder."""
    return ["--config_file", DEMO_PRETRAINED, "--demo.pretrain_build.config_file", str(recipe), "--pretrain_path",
            str(WEIGHTS), "--root_dir", "toy", "--demo.toy.generate_in", "toy", "--output_dir", "runs",
            "--num_epoch", "1", "--eval_period", "1", "--batch_size", "8", "--tensorboard", "false",
            *[a for k, v in SMALL_TOY.items() for a in (f"--demo.toy.{k}", str(v))], *extra]


@pytest.mark.parametrize("config, row", [(DEMO_PRETRAINED, "`bash run_demo.sh`"), (DEMO, "`configs/demo.yaml`")])
def test_the_scores_the_demo_compares_with_are_the_readme_s(config, row):
    """demo.expected holds the README's row of that demo (one fact, stated in the table, checked here)."""
    line = next(line for line in (REPO / "README.md").read_text().splitlines() if line.startswith(f"| {row}"))
    scores = [float(v) for v in re.search(r"([\d.]+) / ([\d.]+) / ([\d.]+) / ([\d.]+) / ([\d.]+)", line).groups()]
    expected = load_config(config, entry="demo").demo.expected
    assert [expected[k] for k in ("R1", "R5", "R10", "mAP", "mINP")] == scores


def test_split_overrides_gives_train_py_every_key_but_the_demo_s():
    own, rest = split_overrides(["--demo.toy.seed", "3", "--seed=1", "--demo.expected={}", "--lr", "0.1"])
    assert own == ["--demo.toy.seed", "3", "--demo.expected={}"] and rest == ["--seed=1", "--lr", "0.1"]


def test_train_py_reads_a_demo_config_without_the_demo_s_keys_and_refuses_them_on_the_command_line():
    assert "demo" not in load_config(DEMO_PRETRAINED)
    demo = load_config(DEMO_PRETRAINED, entry="demo").demo
    assert demo.pretrain_build.config_file == "configs/demo_backbone.yaml" and demo.expected["epoch"] == 14
    with pytest.raises(ConfigError, match="demo.toy.seed is a key of the demo"):
        load_config(DEMO_PRETRAINED, ["--demo.toy.seed", "3"])


def test_base_and_benchmark_configs_carry_no_demo_keys():
    for path in [CONFIG_DIR / "base.yaml", *CONFIG_DIR.glob("*/*.yaml")]:
        text = path.read_text(encoding="utf-8")
        assert "toy" not in text and "pretrain_build" not in text and "demo:" not in text, path


@pytest.mark.parametrize("case, error, match", [
    ("device", ConfigError, "device = 'cuda:7'"),
    ("key", ConfigError, "unknown key 'batch_sise'"),
    ("root_dir", DatasetError, "root_dir .*/elsewhere holds no CUHK-PEDES dataset"),
    ("weights name", PretrainBuildError, "demo.pretrain_build writes open_clip_model.safetensors"),
    ("recipe device", PretrainBuildError, r"the backbone recipe .*backbone.yaml .*device = 'cuda:7'"),
    ("recipe key", PretrainBuildError, r"the backbone recipe .*backbone.yaml.*unknown key 'num_epochs'"),
    ("recipe value", PretrainBuildError, r"the backbone recipe .*backbone.yaml.*lr = -1"),
    ("recipe file", PretrainBuildError, r"demo.pretrain_build.config_file .*missing.yaml: no such file"),
    ("recipe root_dir", DatasetError, r"the backbone recipe .*root_dir .*/bb_elsewhere holds no CUHK-PEDES"),
])
def test_a_mistake_in_the_demo_or_its_backbone_recipe_ends_before_anything_is_written(tmp_path, monkeypatch, case,
                                                                                      error, match):
    """No toy data, no build folder, no run folder: the working folder stays as it was (only the recipe file)."""
    import demo

    monkeypatch.chdir(tmp_path)
    recipe_lines = {"recipe device": ["device: cuda:7"], "recipe key": ["num_epochs: 3"], "recipe value": ["lr: -1"],
                    "recipe root_dir": ["root_dir: bb_elsewhere"]}.get(case, [])
    recipe = tiny_recipe(tmp_path, *recipe_lines)
    extra = {"device": ["--device", "cuda:7"], "key": ["--batch_sise", "8"], "root_dir": ["--root_dir", "elsewhere"],
             "weights name": ["--pretrain_path", "weights/backbone.safetensors"],
             "recipe file": ["--demo.pretrain_build.config_file", "missing.yaml"]}.get(case, [])
    with pytest.raises(error, match=match):
        demo.main(tiny_demo_args(recipe, *extra))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone.yaml"]


def test_the_demo_ends_with_where_everything_is_its_numbers_beside_the_readme_s_and_what_to_try_next(tmp_path,
                                                                                                      monkeypatch):
    import json

    import torch

    from processor.demo import DemoPlan, summary

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    run = tmp_path / "runs" / "CUHK-PEDES" / "20260101_000000_demo_pretrained_irra_sgiha"
    run.mkdir(parents=True)
    scores = [dict(zip(("R1", "R5", "R10", "mAP", "mINP"), s)) for s in ((90, 99, 100, 88, 80), (89, 98, 100, 87, 79))]
    rows = [{"epoch": 1, **scores[0], "val": {"R1": 70.0}}, {"epoch": 2, **scores[1], "val": {"R1": 75.0}}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    expected = {"seed": 42, "threads": 2, "epoch": 2, "R1": 96.04, "mAP": 95.59}
    config = Path(DEMO_PRETRAINED)
    for seed, note in ((42, ""), (1, "; this run has seed 1: expect other numbers")):
        cfg = load_config(config, {"demo.expected": expected, "root_dir": "/d", "seed": seed}, entry="demo")
        text = summary(DemoPlan(config, cfg, [], None), run, run / "grounding.png",
                       {"pointing_accuracy": 0.37, "chance": 0.206}, 12.4)
        assert text.splitlines() == [
            f"demo finished in 12 s (demo_pretrained.yaml, seed {seed}, 2 threads)",
            f"  run folder  {run}",
            "  results     metrics.jsonl (every epoch's losses and scores), test_results.json (best.pth on test), "
            "best.pth (epoch 1: best test Rank-1), last.pth (epoch 2, resumable)",
            f"  picture     {run}/grounding.png (SG-IHA's head at last.pth; pointing game 37.0%, chance 20.6%)",
            "  test, epoch 2:    R1 89.00  R5 98.00  R10 100.00  mAP 87.00  mINP 79.00",
            "  README:           R1 96.04  mAP 95.59 (seed 42, 2 threads, epoch 2; another CPU gives another model, "
            f"as another seed does{note})",
            "next:",
            f"  python test.py --config_file {run} --checkpoint last.pth  # evaluate the last epoch",
            f"  python tools/search.py --config_file {run} --gallery /d/CUHK-PEDES/imgs --query \"The woman has long "
            "black hair, is dressed in a red coat, is wearing blue jeans and walks in white shoes.\"  # the toy's "
            "sentence pattern: a toy-trained model reads that one",
            f"  bash run_demo.sh --config_file {config} --seed 1  # another seed, then compare the runs:",
            f"  python tools/summarize_runs.py {run.parent}/*_demo_pretrained_irra_sgiha",
            f"  python tools/compare_runs.py {run} <the other run>  # what differs, and from which epoch"]


def _demo(cwd: Path, *args: str) -> subprocess.Popen:
    """``python demo.py`` in ``cwd``, in its own process group (so a kill reaches the build's child processes too),
    on one thread: the build is then the same bytes every time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(REPO / "demo.py"), *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)


def _finish(process: subprocess.Popen) -> str:
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out[-3000:]
    return out


@pytest.mark.slow
def test_two_demos_at_once_build_the_backbone_once_and_a_killed_build_is_built_again_the_same(tmp_path):
    recipe = tiny_recipe(tmp_path)
    weights = tmp_path / WEIGHTS
    first, second = _demo(tmp_path, *tiny_demo_args(recipe)), _demo(tmp_path, *tiny_demo_args(recipe))
    outputs = [_finish(first), _finish(second)]
    assert sum("step 1/3: building the demo backbone" in out for out in outputs) == 2  # both found it missing
    assert sum(f"built the demo backbone {weights}" in out for out in outputs) == 1
    waited = next(out for out in outputs if "built by the command this one waited for" in out)
    assert "waiting for process" in waited and f"(lock {weights.parent / '.build.lock'})" in waited
    (build,) = list((weights.parent / BUILD_RUNS).iterdir())  # one build, run in its own folder
    assert (build / BUILD_LOG).is_file() and len(list((build / "CUHK-PEDES").iterdir())) == 1
    assert len(list((tmp_path / "runs" / "CUHK-PEDES").iterdir())) == 2  # two fine-tunes, one folder each
    for out in outputs:  # the build's own training reports to its log, not to the console
        finished = [line for line in out.splitlines() if "finished: run folder" in line]
        assert len(finished) == 1 and "_demo_pretrained_irra_sgiha" in finished[0], finished
    built = weights.read_bytes()

    weights.unlink()
    killed = _demo(tmp_path, *tiny_demo_args(recipe))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not [
            p for p in (weights.parent / BUILD_RUNS).glob("*/CUHK-PEDES/*/last.pth") if build not in p.parents]:
        time.sleep(0.2)  # until the new build has finished its first epoch of two
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not weights.exists()
    (stale,) = list((weights.parent / BUILD_RUNS).iterdir())  # the killed build's (it removed the first one's)
    assert stale != build and not (stale / "export").exists()
    out = _finish(_demo(tmp_path, *tiny_demo_args(recipe)))
    assert f"removed {stale}: an earlier build that did not finish" in out
    assert weights.read_bytes() == built
    assert [p.name for p in weights.parent.iterdir() if p.suffix == ".safetensors"] == [WEIGHTS_FILE]
