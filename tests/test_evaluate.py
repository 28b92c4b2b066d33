"""test.py: what it evaluated is recorded, another evaluation never replaces a run's result, zero-shot weights."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from datasets.build import build_eval_sets
from model.clip import CLIP
from model.pretrained import resize_pos_embed
from processor.evaluator import evaluate
from tests.tiny_run import load_test_script
from utils.checkpoint import load_checkpoint
from utils.config import CONFIG_DIR, load_config

ROOT = CONFIG_DIR.parent
test_script = load_test_script()

METRICS = {"R1", "R5", "R10", "mAP", "mINP"}


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_toy: Path, tiny_run: Path) -> tuple[Path, Path]:
    """The shared tiny run's data and a copy of its folder (these tests add result files to it)."""
    run_dir = tmp_path_factory.mktemp("evaluate") / tiny_run.name
    shutil.copytree(tiny_run, run_dir)
    return tiny_toy, run_dir


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_the_run_s_own_result_records_what_was_evaluated(run):
    toy, run_dir = run
    result = test_script.main(["--config_file", str(run_dir / "configs.yaml")])
    saved = _read(run_dir / "test_results.json")
    best = load_checkpoint(run_dir / "best.pth")
    assert saved["dataset"] == "CUHK-PEDES" and saved["split"] == "test" and saved["epoch"] == best["epoch"]
    assert saved["checkpoint"] == str(run_dir / "best.pth") and set(saved["metrics"]) == METRICS
    assert saved["metrics"]["R1"] == pytest.approx(best["scores"]["test"]["R1"])
    assert result == saved


def test_other_evaluations_go_to_their_own_files(run, tmp_path):
    toy, run_dir = run
    test_script.main(["--config_file", str(run_dir / "configs.yaml")])
    own = (run_dir / "test_results.json").read_bytes()
    test_script.main(["--config_file", str(run_dir / "configs.yaml"), "--checkpoint", str(run_dir / "last.pth")])
    last = _read(run_dir / "test_results_CUHK-PEDES_last.json")
    assert last["epoch"] == 2 and last["checkpoint"] == str(run_dir / "last.pth")
    test_script.main(["--config_file", str(run_dir / "configs.yaml"), "--split", "val"])
    assert _read(run_dir / "test_results_CUHK-PEDES_best_val.json")["split"] == "val"
    other = tmp_path / "rstp"
    from datasets.toy import make_toy_dataset
    make_toy_dataset(other, "RSTPReid", num_train_ids=4, num_val_ids=2, num_test_ids=3, images_per_id=2,
                     image_size=[64, 32], seed=4)
    test_script.main(["--config_file", str(run_dir / "configs.yaml"), "--dataset_name", "RSTPReid",
                      "--root_dir", str(other)])
    assert _read(run_dir / "test_results_RSTPReid_best.json")["dataset"] == "RSTPReid"
    assert (run_dir / "test_results.json").read_bytes() == own  # the run's own result is untouched


@pytest.mark.slow
def test_a_config_that_is_not_a_run_s_says_so(run, tmp_path):
    toy, _ = run
    config = tmp_path / "my.yaml"
    config.write_text(f"_base_: {CONFIG_DIR / 'demo.yaml'}\nroot_dir: {toy}\n")
    result = subprocess.run([sys.executable, str(ROOT / "test.py"), "--config_file", str(config)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: --config_file {config} is not a run's")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my.yaml"]  # no test.log beside it


def _openai_layout_vit_b16() -> tuple[CLIP, dict[str, torch.Tensor]]:
    """A randomly initialised full-size ViT-B/16 at OpenAI's 224x224 (14x14 grid), fp16 as OpenAI ships it."""
    torch.manual_seed(0)
    model = CLIP.from_config(load_config(None, {"img_size": [224, 224]})).eval()
    return model, {k: v.half() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def openai_files(tmp_path_factory) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    folder = tmp_path_factory.mktemp("openai")
    model, weights = _openai_layout_vit_b16()
    torch.save(weights, folder / "ViT-B-16_state_dict.pt")
    model.half()
    for name, value in {"input_resolution": 224, "context_length": 77, "vocab_size": 49408}.items():
        model.register_buffer(name, torch.tensor(value))  # OpenAI's archives carry these scalars
    with torch.no_grad():
        traced = torch.jit.trace(model, (torch.zeros(1, 3, 224, 224, dtype=torch.half),
                                         torch.ones(1, 77, dtype=torch.long)), check_trace=False)
    traced.save(str(folder / "ViT-B-16.pt"))
    return folder / "ViT-B-16.pt", folder / "ViT-B-16_state_dict.pt", weights


@pytest.mark.slow
def test_zero_shot_evaluates_the_config_s_pretrained_weights(run, openai_files, tmp_path):
    toy, _ = run
    archive, state_dict, weights = openai_files
    results = {}
    for name, path in (("archive", archive), ("state_dict", state_dict)):
        out = tmp_path / name
        results[name] = test_script.main([
            "--config_file", str(CONFIG_DIR / "CUHK-PEDES" / "irra_sgiha.yaml"), "--checkpoint", "pretrained",
            "--pretrain_path", str(path), "--root_dir", str(toy), "--out_dir", str(out), "--device", "cpu",
            "--num_workers", "0", "--test_batch_size", "16"])
        assert _read(out / "test_results.json") == results[name]
        assert results[name]["checkpoint"] == f"pretrained: {path}" and results[name]["epoch"] is None
        assert load_config(out / "configs.yaml").pretrain_path == str(path)
    assert results["archive"]["metrics"] == results["state_dict"]["metrics"]
    # an independent evaluation of the same weights: grid 14x14 -> 24x8 resized here, our evaluator
    cfg = load_config(CONFIG_DIR / "CUHK-PEDES" / "irra_sgiha.yaml", {"root_dir": str(toy), "num_workers": 0,
                                                                     "test_batch_size": 16})
    model = CLIP.from_config(cfg).eval()
    state = {k: v.float() for k, v in weights.items()}
    state["visual.positional_embedding"] = resize_pos_embed(state["visual.positional_embedding"], (14, 14), (24, 8))
    model.load_state_dict(state)
    expected = evaluate(model, build_eval_sets(cfg, ("test",))["test"], torch.device("cpu"), "none",
                        cfg.eval_chunk_size)
    assert results["archive"]["metrics"] == pytest.approx(expected)


@pytest.mark.slow
def test_zero_shot_needs_pretrained_weights(run, tmp_path):
    toy, _ = run
    result = subprocess.run([sys.executable, str(ROOT / "test.py"),
                             "--config_file", str(CONFIG_DIR / "demo_pretrained.yaml"), "--checkpoint", "pretrained",
                             "--pretrain_choice", "none", "--root_dir", str(toy), "--out_dir", str(tmp_path / "o")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "pretrain_choice = 'none': there are no pretrained weights" in result.stderr
    assert not (tmp_path / "o").exists()
