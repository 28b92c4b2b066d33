"""Wrong train.py / test.py / run-script commands: exit status 2, a last line 'error: ...' naming the key or file,
no traceback, no new run folder and no changed file. The entry points run in this process through run_cli (what
their command lines do); the slow tier runs one case of each as a real command line. Plus the errors that come up
once training runs (an unreadable image in a loader worker, Ctrl-C) and extending a finished run."""
from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest

import train as train_script
from datasets.toy import make_toy_dataset
from tests.cli_checks import REPO, EntryPoint, assert_one_error_line, snapshot
from tests.tiny_run import DEMO, benchmark_settings, load_test_script, make_tiny_toy, tiny_args, with_ctrl_c
from utils.checkpoint import load_checkpoint
from utils.config import load_config


class Case(NamedTuple):
    command: list[str]  # a script of the repository and its arguments; '{name}': a path of the world fixture
    names: list[str]    # what the error line must name, with the same placeholders


def _train(*extra: str, root: str = "{toy}") -> list[str]:
    return ["train.py", *tiny_args(Path(root), Path("{root}/out"), *extra)]


CASES = {
    # config values, checked when the config loads
    "integer key given 2.5": Case(_train("--num_epoch", "2.5"), ["num_epoch = 2.5", "whole number"]),
    "batch of zero": Case(_train("--batch_size", "0"), ["batch_size = 0", ">= 2"]),
    "beta out of range": Case(_train("--betas", "[0.9, 1.5]"), ["betas = [0.9, 1.5]", "[0, 1)"]),
    "image smaller than a patch": Case(_train("--img_size", "[4, 16]"), ["img_size = [4, 16]", "patch_size = 8"]),
    "repeated SG-IHA layer": Case(_train("--sgiha.layers", "[1, 1]"), ["sgiha.layers = [1, 1]", "distinct"]),
    "SG-IHA layer beyond the towers": Case(_train("--sgiha.layers", "[2, 9]"), ["sgiha.layers = [2, 9]", "0..3"]),
    "repeated loss": Case(_train("--loss_names", "sdm+id+sdm"), ["loss_names = 'sdm+id+sdm'", "twice"]),
    "empty run name": Case(_train("--name", ""), ["name = ''"]),
    "null where no null is allowed": Case(_train("--seed", "null"), ["seed = null is not allowed"]),
    "select_on not evaluated": Case(_train("--select_on", "val", "--eval_splits", "[test]"),
                                    ["select_on = 'val'", "eval_splits"]),
    "negative temperature": Case(_train("--temperature", "-1"), ["temperature = -1.0", "> 0"]),
    "typo in a key": Case(_train("--sgiha.fliter", "res"),
                          ["unknown key 'sgiha.fliter' (did you mean 'sgiha.filter'?)"]),
    "missing config file": Case(["train.py", "--config_file", "{root}/nope.yaml"], ["{root}/nope.yaml", "not found"]),
    "YAML syntax error": Case(["train.py", "--config_file", "{typo_yaml}"],
                              ["{typo_yaml}", "line 2: 'num_epoch 60'", "line 3: 'lr: 1.0e-5'"]),
    "output_dir under a file": Case(_train("--output_dir", "{notes}/logs"),
                                    ["output_dir = {notes}/logs", "{notes} is a file, not a folder"]),
    "cuda without a GPU": Case(_train("--device", "cuda"), ["device = 'cuda'", "CUDA is not available"]),
    # data, checked as soon as the annotation is read
    "dataset folder missing": Case(_train(root="{root}/no_data"), ["{root}/no_data/CUHK-PEDES", "not found"]),
    "split the dataset lacks": Case(_train("--dataset_name", "ICFG-PEDES", root="{icfg}"),
                                    ["{icfg}/ICFG-PEDES/ICFG-PEDES.json", "no record has split 'val'"]),
    "annotation not UTF-8": Case(_train(root="{latin1}"), ["{latin1}/CUHK-PEDES/reid_raw.json", "not UTF-8"]),
    "caption that is not a string": Case(_train(root="{not_text}"),
                                         ["reid_raw.json: record 3", "caption 1 is int 7, not a string"]),
    "annotation_file with a benchmark": Case(_train("--annotation_file", "x.json"),
                                             ["annotation_file = 'x.json'", "dataset_name: custom"]),
    "custom dataset without annotation_file": Case(_train("--dataset_name", "custom"),
                                                   ["dataset_name: custom needs annotation_file"]),
    "spaCy backend without spaCy": Case(_train("--phrase_backend", "spacy"), ["phrase_backend 'spacy'", "spaCy"]),
    "identity sampler: batch not P x K": Case(_train("--sampler", "identity", "--num_instance", "3"),
                                              ["batch_size = 8", "num_instance = 3"]),
    "identity sampler: too few identities": Case(
        _train("--sampler", "identity", "--num_instance", "1", "--batch_size", "64"),
        ["identity sampler", "64 identities", "the training split has 16"]),
    # resume
    "resume a missing checkpoint": Case(["train.py", "--resume", "{run}/nope.pth"],
                                        ["{run}/nope.pth", "the checkpoint is missing"]),
    "resume a truncated checkpoint": Case(["train.py", "--resume", "{torn}/last.pth"],
                                          ["{torn}/last.pth", "truncated or corrupt", "{torn}/last_prev.pth"]),
    "resume best.pth": Case(["train.py", "--resume", "{run}/best.pth"], ["{run}/best.pth", "last.pth"]),
    "resume with a model that does not fit": Case(
        ["train.py", "--resume", "{run}/last.pth", "--backbone.embed_dim", "16"],
        ["{run}/last.pth", "does not fit", "backbone.embed_dim: 32 -> 16"]),
    "resume a finished run": Case(["train.py", "--resume", "{run}/last.pth"],
                                  ["{run}/last.pth", "already finished epoch 2", "--num_epoch"]),
    # test.py and the run scripts
    "test.py with a truncated checkpoint": Case(
        ["test.py", "--config_file", "{run}/configs.yaml", "--checkpoint", "{torn}/last.pth"],
        ["{torn}/last.pth", "truncated or corrupt"]),
    "test.py with a missing checkpoint": Case(
        ["test.py", "--config_file", "{run}/configs.yaml", "--checkpoint", "{run}/nope.pth"],
        ["checkpoint not found", "{run}/nope.pth"]),
    "train.py with a run folder as config": Case(["train.py", "--config_file", "{run}"],
                                                 ["--config_file {run} is a folder", "--resume {run}/last.pth",
                                                  "--config_file {run}/configs.yaml"]),
    "test.py with a folder that is not a run": Case(["test.py", "--config_file", "{toy}"],
                                                    ["--config_file {toy}", "a folder without configs.yaml"]),
    "test.py with a checkpoint name the run folder lacks": Case(
        ["test.py", "--config_file", "{run}", "--checkpoint", "nope.pth"], ["checkpoint not found", "{run}/nope.pth"]),
    "test.py with out_dir under a file": Case(["test.py", "--config_file", "{run}", "--out_dir", "{notes}/eval"],
                                              ["--out_dir {notes}/eval", "{notes} is a file, not a folder"]),
    "zero-shot test.py with output_dir under a file": Case(
        ["test.py", "--config_file", DEMO, "--checkpoint", "pretrained", "--output_dir", "{notes}"],
        ["output_dir = {notes}", "{notes} is a file, not a folder"]),
    "run script with an unknown dataset": Case(["run_irra_SG-IHA.sh", "Market-1501"],
                                               ["unknown dataset 'Market-1501'"]),
}


ENTRY_POINTS: dict[str, EntryPoint] = {"train.py": train_script.main,
                                       "test.py": lambda argv: load_test_script().main(argv)}
# the cases run again as real command lines (slow tier): one per Python entry point
COMMAND_LINE_CASES = ["typo in a key", "test.py with a missing checkpoint"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_toy: Path, tiny_run: Path) -> dict[str, Path]:
    """A finished tiny run (2 epochs of 2), its damaged copy, and datasets with one fault each, under one folder;
    the run's data (``run_data``, shared with other tests) is watched too."""
    root = tmp_path_factory.mktemp("user_errors")
    toy = root / "toy"
    shutil.copytree(tiny_toy, toy)  # with the phrase copy the run wrote
    run = root / "logs" / tiny_run.parent.name / tiny_run.name
    shutil.copytree(tiny_run, run)
    torn = root / "torn_run"
    shutil.copytree(run, torn)
    data = (torn / "last.pth").read_bytes()
    (torn / "last.pth").write_bytes(data[: len(data) // 2])
    paths = {"root": root, "run_data": tiny_toy, "toy": toy, "run": run, "torn": torn, "icfg": root / "icfg",
             "latin1": root / "latin1", "not_text": root / "not_text", "notes": root / "notes.txt",
             "typo_yaml": root / "typo.yaml"}
    paths["notes"].write_text("a file where a folder is expected\n")
    paths["typo_yaml"].write_text(f"_base_: {DEMO}\nnum_epoch 60\nlr: 1.0e-5\n")  # the ':' missing on line 2
    make_toy_dataset(paths["icfg"], "ICFG-PEDES", num_train_ids=4, num_val_ids=0, num_test_ids=2, images_per_id=1,
                     image_size=[64, 32], seed=0)
    for name in ("latin1", "not_text"):
        shutil.copytree(toy / "CUHK-PEDES", paths[name] / "CUHK-PEDES")
        for stale in (paths[name] / "CUHK-PEDES").glob("reid_raw_noun*"):
            stale.unlink()
    annotation = paths["latin1"] / "CUHK-PEDES" / "reid_raw.json"
    records = json.loads(annotation.read_text())
    records[0]["captions"][0] = "A café " + records[0]["captions"][0]
    annotation.write_bytes(json.dumps(records, ensure_ascii=False).encode("latin-1"))
    annotation = paths["not_text"] / "CUHK-PEDES" / "reid_raw.json"
    records = json.loads(annotation.read_text())
    records[3]["captions"][1] = 7
    annotation.write_text(json.dumps(records))
    return paths


def watched(world: dict[str, Path]) -> dict[str, tuple[int, int] | None]:
    return snapshot(world["root"], world["run_data"])


def fill(template: str, world: dict[str, Path]) -> str:
    return template.format(**{k: str(v) for k, v in world.items()})


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_wrong_command_ends_with_one_error_line(case: Case, world: dict[str, Path], entry_point):
    before = watched(world)
    script, *argv = (fill(a, world) for a in case.command)
    if script.endswith(".sh"):  # a shell script: its error comes before any Python starts
        result = subprocess.run(["bash", script, *argv], cwd=REPO, capture_output=True, text=True)
    else:
        result = entry_point(script, ENTRY_POINTS[script], argv)
    assert_one_error_line(result, [fill(name, world) for name in case.names])
    assert watched(world) == before  # no run folder, no log line, no checkpoint or phrase copy written


@pytest.mark.slow
@pytest.mark.parametrize("name", COMMAND_LINE_CASES)
def test_wrong_command_line_ends_with_one_error_line(name: str, world: dict[str, Path]):
    before = watched(world)
    result = subprocess.run([sys.executable, *(fill(a, world) for a in CASES[name].command)], cwd=REPO,
                            capture_output=True, text=True)
    assert_one_error_line(result, [fill(n, world) for n in CASES[name].names])
    assert watched(world) == before


def test_an_unreadable_image_met_in_a_loader_worker(tmp_path: Path, entry_point):
    toy = make_tiny_toy(tmp_path / "toy")
    broken = sorted((toy / "CUHK-PEDES" / "imgs").rglob("*.png"))[0]
    broken.write_bytes(broken.read_bytes()[:40])  # exists, so the start-up check passes; decoding fails
    result = entry_point("train.py", train_script.main, tiny_args(toy, tmp_path / "out", "--num_workers", "1"))
    last = assert_one_error_line(result, [str(broken), "cannot read the image"])
    (run,) = list((tmp_path / "out" / "CUHK-PEDES").iterdir())
    assert last.removeprefix("error: ") in (run / "train.log").read_text()


@pytest.mark.slow
def test_ctrl_c_ends_with_the_resume_command(tmp_path: Path):
    toy = make_tiny_toy(tmp_path / "toy")
    process = subprocess.Popen([sys.executable, "train.py", *tiny_args(toy, tmp_path / "out", "--num_epoch", "50")],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=with_ctrl_c)
    deadline = time.time() + 300
    while not list((tmp_path / "out").rglob("last.pth")) and time.time() < deadline:
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    (run,) = list((tmp_path / "out" / "CUHK-PEDES").iterdir())
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert_one_error_line(result, ["interrupted", f"resume with: python train.py --resume {run / 'last.pth'}"],
                          status=130)


@pytest.mark.slow
def test_extending_a_finished_run_continues_its_schedule(tiny_toy: Path, tmp_path: Path):
    # the benchmark configs' cosine, whose values depend on num_epoch (the demo holds a step schedule)
    run = train_script.main(tiny_args(tiny_toy, tmp_path, *benchmark_settings()))
    resumed = train_script.main(["--resume", str(run / "last.pth"), "--num_epoch", "4"])
    rows = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    # the cosine over 4 epochs (no warm-up in the tiny runs): epoch k + 1 at 0.5 x (1 + cos(pi x k/4)) x lr
    lr = load_config(run / "configs.yaml").lr
    epoch3, epoch4 = lr * 0.5 * (1 + math.cos(math.pi / 2)), lr * 0.5 * (1 + math.cos(3 * math.pi / 4))
    assert [r["lr"] for r in rows[2:]] == pytest.approx([epoch3, epoch4])
    log = (run / "train.log").read_text()
    assert "resuming with changed settings: num_epoch: 2 -> 4" in log
    assert f"the schedule continues at lr {epoch3:.3g} -> {epoch4:.3g} for epochs 3..4" in log
    assert load_checkpoint(run / "last.pth")["epoch"] == 4
