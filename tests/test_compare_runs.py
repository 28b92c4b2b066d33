"""tools/compare_runs.py (issue 33): two runs that differ in one config key, in the annotation file, in the weights
file or in the code each have that difference named and only that one; identical runs and seeds of one experiment
come out "same". The fast cases compare copies of one trained run with one thing changed in them; the slow tier
trains the runs themselves."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from model.clip import CLIP
from tests.test_run_info import make_repo, needs_git
from tests.tiny_run import DEMO, tiny_args
from tools import compare_runs
from tools.compare_runs import Comparison, config_sections
from utils.config import load_config
from utils.run_info import RUN_INFO_FILE, code_state
from utils.runs import METRICS_FILE


def named(result: Comparison) -> set[str]:
    """Every difference the comparison names, as 'section: key'."""
    return {f"{section}: {key}" for grouped in (result.config, result.info)
            for section, keys in grouped.items() for key in keys}


def copy_run(run: Path, folder: Path) -> Path:
    return Path(shutil.copytree(run, folder / run.name))


def compare(*runs: Path, extra: tuple[str, ...] = ()) -> Comparison:
    return compare_runs.main([*map(str, runs), *extra])


def test_sections_come_from_base_yaml():
    sections = config_sections()
    assert sections["lr"] == "solver" and sections["root_dir"] == "data" and sections["amp"] == "experiment"
    assert sections["loss_names"] == "objectives" and sections["sgiha"] == "SG-IHA"
    assert sections["pretrain_path"] == "backbone" and sections["eval_period"] == "evaluation"


def test_a_copy_of_a_run_is_the_same(tiny_run, tmp_path, capsys):
    result = compare(tiny_run, copy_run(tiny_run, tmp_path))
    assert result.same and named(result) == set()
    out = capsys.readouterr().out
    assert "\nsame: nothing in config, code, environment, data or weights differs\n" in out
    assert "first epoch where any logged value differs: none" in out
    assert "their test R1 spread is at most 0.00 points" in out  # two runs of seed 42


def test_one_config_key_is_named_in_its_section(tiny_run, tmp_path):
    other = copy_run(tiny_run, tmp_path)
    config = yaml.safe_load((other / "configs.yaml").read_text())
    config["weight_decay"] = 0.5
    (other / "configs.yaml").write_text(yaml.safe_dump(config))
    result = compare(tiny_run, other)
    assert named(result) == {"solver: weight_decay"}
    assert result.config["solver"]["weight_decay"] == [load_config(tiny_run / "configs.yaml").weight_decay, 0.5]


@needs_git
def test_an_uncommitted_change_is_named_as_code_only(tiny_run, tmp_path):
    repo = make_repo(tmp_path / "repo")
    runs = []
    for name in ("clean", "changed"):
        run = copy_run(tiny_run, tmp_path / name)
        info = json.loads((run / RUN_INFO_FILE).read_text())
        info["code"] = code_state(repo)[0]  # the record train.py makes of this repository as it is now
        (run / RUN_INFO_FILE).write_text(json.dumps(info))
        runs.append(run)
        (repo / "model.py").write_text("WIDTH = 128\n")
    result = compare(*runs)
    assert named(result) == {"code: code.dirty", "code: code.diff_sha256"}


def test_a_run_without_run_info_is_said_not_failed(tiny_run, tmp_path, capsys):
    old = copy_run(tiny_run, tmp_path)
    (old / RUN_INFO_FILE).unlink()
    result = compare(tiny_run, old)
    assert not result.same and named(result) == set() and result.missing_info == ["B"]
    out = capsys.readouterr().out
    assert "B: no run_info.json (a run made before runs recorded it)" in out
    assert "code, environment, data and weights are unknown" in out


def test_seeds_of_one_experiment_are_named_as_such(tiny_run, tmp_path, capsys):
    seeded = copy_run(tiny_run, tmp_path)
    for name in ("configs.yaml",):
        config = yaml.safe_load((seeded / name).read_text())
        config["seed"] = 1
        (seeded / name).write_text(yaml.safe_dump(config))
    info = json.loads((seeded / RUN_INFO_FILE).read_text())
    info["seed"] = 1
    (seeded / RUN_INFO_FILE).write_text(json.dumps(info))
    rows = [json.loads(line) for line in (seeded / METRICS_FILE).read_text().splitlines()]
    for row in rows:
        row["R1"] += 10.0  # another seed, another score
    (seeded / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = compare(tiny_run, seeded)
    assert result.same and result.experiments == [[0, 1]]
    out = capsys.readouterr().out
    name = load_config(tiny_run / "configs.yaml").name
    assert f"A, B: seeds 42, 1 of experiment {name}\n" in out
    assert "all runs are seeds of one experiment: their test R1 spread is at most 10.00 points" in out


def test_the_parting_epoch_is_beyond_the_seed_spread(tiny_run, tmp_path, capsys):
    """Experiment X (seeds 42, 1: R1 spread 1 point each epoch) against Y (one seed): Y's R1 is 0.5 above X's
    mean at epoch 1 (within the spread) and 5 above at epoch 2 (beyond it)."""
    runs = [copy_run(tiny_run, tmp_path / name) for name in ("x42", "x1", "y")]
    changes = [({}, [10.0, 10.0]), ({"seed": 1}, [11.0, 11.0]), ({"weight_decay": 0.5}, [11.0, 15.5])]
    for run, (config_changes, r1) in zip(runs, changes):
        config = yaml.safe_load((run / "configs.yaml").read_text())
        config.update(config_changes)
        (run / "configs.yaml").write_text(yaml.safe_dump(config))
        rows = [json.loads(line) for line in (run / METRICS_FILE).read_text().splitlines()]
        for row, value in zip(rows, r1):
            row["R1"] = value
        (run / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = compare(*runs)
    assert result.experiments == [[0, 1], [2]]
    out = capsys.readouterr().out
    assert "epoch 2: the experiments' mean test R1 differ by 5.00 points, more than the seed spread 1.00" in out
    assert "epoch 1:" not in out


def test_plot_draws_every_run(tiny_run, tmp_path):
    compare(tiny_run, copy_run(tiny_run, tmp_path), extra=("--plot", str(tmp_path / "both.png")))
    assert (tmp_path / "both.png").stat().st_size > 0


# ---- the slow tier: runs trained for the comparison ----

TINY_GRID = ("--backbone.pretrain_grid", "[4, 2]")  # tiny_args' 32x16 input at stride 8


def write_weights(cfg_args: list[str], path: Path, shift: float) -> None:
    """A backbone state dict with tiny_args' shapes (random, seed 0), every tensor moved by ``shift``."""
    torch.manual_seed(0)
    model = CLIP.from_config(load_config(DEMO, cfg_args))
    torch.save({k: v + shift for k, v in model.state_dict().items()}, path)


@pytest.fixture(scope="module")
def trained(tiny_toy, tmp_path_factory) -> dict[str, Path]:
    """One-epoch runs on a copy of the tiny toy set: 'a' and 'a_again' alike, 'lr' with another lr, 'seed' with
    another seed, then 'caption' after one caption of the annotation changed, then 'w1' and 'w2' from weights files
    of one path whose contents differ."""
    import train
    from utils.logger import setup_logger

    root = tmp_path_factory.mktemp("compare")
    toy = Path(shutil.copytree(tiny_toy, root / "toy"))
    out = root / "runs"

    def run(name: str, *extra: str) -> Path:
        return train.main(tiny_args(toy, out / name, "--num_epoch", "1", *extra))

    runs = {"a": run("a"), "a_again": run("a_again"), "lr": run("lr", "--lr", "2e-3"), "seed": run("seed", "--seed",
                                                                                                     "1")}
    annotation = toy / "CUHK-PEDES" / "reid_raw.json"
    records = json.loads(annotation.read_text())
    records[0]["captions"][0] = "A man in a green coat and black trousers."
    annotation.write_text(json.dumps(records))
    runs["caption"] = run("caption")
    weights = root / "backbone.pt"
    pretrained = ("--pretrain_choice", "file", "--pretrain_path", str(weights), *TINY_GRID)
    for name, shift in (("w1", 0.0), ("w2", 0.01)):
        write_weights(tiny_args(toy, out)[2:] + list(TINY_GRID), weights, shift)
        runs[name] = run(name, *pretrained)
    setup_logger(None)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("a, b, expected", [
    ("a", "a_again", set()),
    ("a", "seed", set()),
    ("a", "lr", {"solver: lr"}),
    ("a", "caption", {"data: data.annotation_sha256"}),
    ("w1", "w2", {"weights: weights.pretrained.sha256"}),
], ids=["identical", "seeds", "config key", "annotation", "weights"])
def test_trained_runs_differ_in_what_changed_only(trained, a, b, expected):
    result = compare(trained[a], trained[b])
    assert named(result) == expected
    assert result.same == (not expected)
