"""tools/export_open_clip.py: open_clip loads the export and gives this project's features, transform and ranking."""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from datasets.build import build_eval_sets
from datasets.transforms import build_transform
from model.build import build_model, load_retrieval_model
from model.clip import CLIP
from model.open_clip_format import LOCAL_DIR_CONFIG, WEIGHTS_FILE, ExportError, read_export
from processor.evaluator import evaluate
from tools import export_open_clip
from utils.checkpoint import CheckpointError, save_checkpoint
from utils.config import CONFIG_DIR, load_config, save_config
from utils.images import load_image
from utils.metrics import retrieval_metrics
from utils.runs import BEST_CHECKPOINT, CONFIG_FILE, METRIC_KEYS
from utils.tokenizer import get_tokenizer

TOLERANCE = 1e-5  # max abs feature difference allowed between open_clip and this project
CPU = torch.device("cpu")
CAPTIONS = ["a woman with long black hair in a red coat, blue jeans and white shoes",
            "a man wearing a green shirt and gray shorts carrying a black bag " * 6]  # the second is truncated


def export(config_file: Path, out: Path, *extra: str) -> tuple[export_open_clip.ExportFiles, str, str]:
    """Run the tool; returns its files and the two loading snippets it printed (add_model_config, local-dir)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        files = export_open_clip.main(["--config_file", str(config_file), "--out", str(out), *extra])
    code = printed.getvalue().split("load them with:", 1)[1]
    by_name, alternative = code.split("# or", 1)
    return files, by_name, "import open_clip\n" + alternative.split("\n", 1)[1]  # the lines below the comment


def run_snippet(code: str) -> dict:
    """Execute printed Python; returns its variables (model, preprocess, tokenizer)."""
    namespace: dict = {}
    exec(code, namespace)  # the tool's own output: what a user would paste
    namespace["model"].eval()
    return namespace


@torch.no_grad()
def max_feature_difference(theirs: torch.nn.Module, ours: CLIP, images: torch.Tensor, ids: torch.Tensor) -> float:
    return max((theirs.encode_image(images) - ours.encode_image(images)).abs().max().item(),
               (theirs.encode_text(ids) - ours.encode_text(ids)).abs().max().item())


@pytest.fixture(scope="module")
def exported(demo_run: Path, tmp_path_factory) -> tuple[export_open_clip.ExportFiles, str, str]:
    return export(demo_run / CONFIG_FILE, tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def ours(demo_run: Path) -> CLIP:
    return load_retrieval_model(load_config(demo_run / CONFIG_FILE), demo_run / BEST_CHECKPOINT, CPU)


def test_export_files_and_default_name(demo_run: Path, exported):
    files, by_name, _ = exported
    assert files.name == f"sgiha-{demo_run.name}"
    assert sorted(p.name for p in files.weights.parent.iterdir()) == sorted(
        [f"{files.name}.json", LOCAL_DIR_CONFIG, WEIGHTS_FILE])
    model_cfg = json.loads(files.model_config.read_text())
    assert model_cfg == {"embed_dim": 64, "quick_gelu": True,
                         "vision_cfg": {"image_size": [64, 32], "layers": 4, "width": 64, "patch_size": 8,
                                        "head_width": 32, "mlp_ratio": 4},
                         "text_cfg": {"context_length": 40, "vocab_size": 49408, "width": 64, "heads": 2,
                                      "layers": 4, "mlp_ratio": 4}}
    assert json.loads(files.local_config.read_text())["model_cfg"] == model_cfg
    assert f'open_clip.add_model_config("{files.weights.parent.resolve()}")' in by_name
    # method §6.5: the weights are the backbone's, nothing of the training heads
    cfg = load_config(demo_run / CONFIG_FILE)
    assert set(load_file(str(files.weights))) == set(CLIP.from_config(cfg).state_dict())


def test_every_export_file_follows_the_umask(demo_run: Path, tmp_path: Path):
    """Like every other output (utils/io.py): 0666 minus the umask, so the group can read an export on shared
    storage. The run folder stands for its configs.yaml."""
    previous = os.umask(0o027)  # group may read, others nothing
    try:
        files = export(demo_run, tmp_path / "export")[0]
    finally:
        os.umask(previous)
    assert files.name == f"sgiha-{demo_run.name}"
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in files.weights.parent.iterdir()}
    assert modes == {name: oct(0o640) for name in (WEIGHTS_FILE, LOCAL_DIR_CONFIG, f"{files.name}.json")}


def test_half_export_is_the_full_export_in_fp16_and_a_pretrain_path(demo_run: Path, exported, tmp_path: Path):
    """--half (how configs/demo_pretrained.yaml's weights are written) stores each float tensor rounded to fp16, nothing
    else changed; pretrain_choice file reads it back into a backbone as those fp16 values in fp32."""
    full = load_file(str(exported[0].weights))
    half_file = export(demo_run, tmp_path / "half", "--half")[0].weights
    half = load_file(str(half_file))
    assert half.keys() == full.keys()
    for key, value in full.items():
        assert half[key].dtype == torch.float16 and torch.equal(half[key], value.half()), key
    run_cfg = load_config(demo_run / CONFIG_FILE)
    grid = [side // run_cfg.stride_size for side in run_cfg.img_size]  # the export's own patch grid
    cfg = load_config(demo_run / CONFIG_FILE, {"pretrain_choice": "file", "pretrain_path": str(half_file),
                                               "backbone.pretrain_grid": grid})
    backbone = build_model(cfg, num_classes=4).backbone.state_dict()
    assert all(torch.equal(backbone[k], v.float()) for k, v in half.items())


def test_open_clip_model_gives_our_features(demo_run: Path, exported, ours: CLIP):
    files, by_name, by_folder = exported
    cfg = load_config(demo_run / CONFIG_FILE)
    test_set = build_eval_sets(cfg, ("test",))["test"]
    transform, tokenizer = build_transform(cfg, train=False), get_tokenizer()
    images = torch.stack([transform(load_image(p)) for p in test_set.img_paths])
    ids = torch.stack([tokenizer(c, cfg.text_length) for c in test_set.captions[:8] + CAPTIONS])

    # create_model + load_state_dict, as the issue states it
    open_clip.add_model_config(files.weights.parent)
    plain = open_clip.create_model(files.name).eval()
    plain.load_state_dict(load_file(str(files.weights)))
    assert max_feature_difference(plain, ours, images, ids) < TOLERANCE
    # both printed snippets (create_model_and_transforms with pretrained=, and local-dir:)
    for code in (by_name, by_folder):
        assert max_feature_difference(run_snippet(code)["model"], ours, images, ids) < TOLERANCE


def test_open_clip_tokenizer_and_preprocess_match_ours(demo_run: Path, exported, tmp_path: Path):
    _, by_name, by_folder = exported
    cfg = load_config(demo_run / CONFIG_FILE)
    test_set = build_eval_sets(cfg, ("test",))["test"]
    # a real picture at a size and mode that make every step work: resize (97x41 -> 64x32), RGB conversion
    picture = tmp_path / "picture.png"
    Image.open(test_set.img_paths[0]).resize((41, 97)).convert("RGBA").save(picture)
    expected = build_transform(cfg, train=False)(load_image(str(picture)))
    ids = torch.stack([get_tokenizer()(c, cfg.text_length) for c in test_set.captions + CAPTIONS])
    for code in (by_name, by_folder):
        snippet = run_snippet(code)
        assert torch.equal(snippet["preprocess"](Image.open(picture)), expected)
        assert torch.equal(snippet["tokenizer"](test_set.captions + CAPTIONS), ids)


def test_open_clip_ranks_the_test_split_as_our_evaluation(demo_run: Path, exported, ours: CLIP):
    cfg = load_config(demo_run / CONFIG_FILE)
    test_set = build_eval_sets(cfg, ("test",))["test"]
    expected = evaluate(ours, test_set, CPU, "none", cfg.eval_chunk_size)

    snippet = run_snippet(exported[1])
    model, preprocess, tokenizer = snippet["model"], snippet["preprocess"], snippet["tokenizer"]
    with torch.no_grad():
        images = torch.stack([preprocess(Image.open(p)) for p in test_set.img_paths])
        image_feats = F.normalize(model.encode_image(images), dim=-1)
        text_feats = F.normalize(model.encode_text(tokenizer(test_set.captions)), dim=-1)
    theirs = retrieval_metrics(text_feats @ image_feats.T, test_set.q_pids, test_set.g_pids)
    assert theirs["R1"] == expected["R1"]
    assert theirs == pytest.approx({k: expected[k] for k in METRIC_KEYS}, abs=1e-6)


@pytest.mark.slow
def test_full_size_vit_b16_exports_exactly(tmp_path: Path):
    """A random full ViT-B/16 at 384x128 with context 77 (configs/base.yaml): same features through open_clip."""
    torch.manual_seed(0)
    cfg = load_config(None, {"pretrain_choice": "none"})
    ours = CLIP.from_config(cfg).eval()
    run_dir = tmp_path / "run"
    save_config(cfg, run_dir / CONFIG_FILE)
    save_checkpoint({"model": {f"backbone.{k}": v for k, v in ours.state_dict().items()}, "config": cfg.to_dict(),
                     "epoch": 0}, run_dir / BEST_CHECKPOINT)
    files, by_name, _ = export(run_dir / CONFIG_FILE, tmp_path / "export", "--name", "vit-b16-test")
    assert json.loads(files.model_config.read_text())["vision_cfg"] == {
        "image_size": [384, 128], "layers": 12, "width": 768, "patch_size": 16, "head_width": 64, "mlp_ratio": 4}

    snippet = run_snippet(by_name)
    images = torch.randn(2, 3, 384, 128)
    ids = snippet["tokenizer"](CAPTIONS)
    assert ids.shape == (2, 77)
    assert max_feature_difference(snippet["model"], ours, images, ids) < TOLERANCE


def test_overlapping_patches_cannot_be_exported(tmp_path: Path):
    save_config(load_config(None, {"stride_size": 12, "pretrain_choice": "none"}), tmp_path / CONFIG_FILE)
    with pytest.raises(ExportError, match=r"stride_size 12 differs from backbone\.patch_size 16"):
        export_open_clip.main(["--config_file", str(tmp_path / CONFIG_FILE), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_config_without_a_run_and_bad_names_are_user_errors(demo_run: Path, tmp_path: Path):
    with pytest.raises(CheckpointError, match=f"no {BEST_CHECKPOINT} beside it"):
        export_open_clip.main(["--config_file", str(CONFIG_DIR / "demo.yaml"), "--out", str(tmp_path)])
    with pytest.raises(ExportError, match="--name 'a/b'"):
        export_open_clip.main(["--config_file", str(demo_run / CONFIG_FILE), "--out", str(tmp_path),
                               "--name", "a/b"])


def test_read_export_refuses_what_this_project_cannot_reproduce(exported, tmp_path: Path):
    files = exported[0]
    cfg, state = read_export(files.weights.parent)
    assert (cfg.img_size, cfg.stride_size, cfg.text_length, cfg.backbone.vision_heads) == ([64, 32], 8, 40, 2)
    for section, key, value, message in (("model_cfg", "quick_gelu", False, "quick_gelu: found False"),
                                         ("preprocess_cfg", "interpolation", "bicubic", "interpolation: found")):
        folder = tmp_path / key
        folder.mkdir()
        (folder / WEIGHTS_FILE).symlink_to(files.weights)
        data = json.loads(files.local_config.read_text())
        data[section][key] = value
        (folder / LOCAL_DIR_CONFIG).write_text(json.dumps(data))
        with pytest.raises(ExportError, match=message):
            read_export(folder)


@pytest.mark.slow
def test_cli_missing_config_is_one_error_line(tmp_path: Path):
    result = subprocess.run([sys.executable, str(CONFIG_DIR.parent / "tools" / "export_open_clip.py"),
                             "--config_file", str(tmp_path / "nowhere" / CONFIG_FILE), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "config file not found" in result.stderr and "Traceback" not in result.stderr
