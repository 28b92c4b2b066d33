"""The CPU demo starts from weights/demo_backbone (docs/demo.md point 15): configs/demo.yaml loads exactly that
file, and the file holds a pretrained backbone, not random weights."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import pytest
from safetensors.torch import load_file, save_file

from datasets.toy import make_toy_dataset
from model.build import build_model
from model.clip import CLIP
from model.pretrained import PretrainedError
from tests.cli_checks import REPO
from tests.tiny_run import load_test_script
from utils.config import CONFIG_DIR, load_config

DEMO = CONFIG_DIR / "demo.yaml"
UNSEEN_TOY_SEED = 5  # neither the backbone's toy (configs/demo_backbone.yaml) nor the demo's (configs/demo.yaml)
TEST_IDS = 20        # people of the zero-shot split, 2 pictures and 4 captions each: chance Rank-1 is 1/20


def demo_config():
    cfg = load_config(DEMO)
    return load_config(DEMO, {"pretrain_path": str(REPO / cfg.pretrain_path)})  # the config's path is repo-relative


def test_demo_config_starts_from_the_shipped_fp16_weights():
    cfg = demo_config()
    assert cfg.pretrain_choice == "file"
    weights = load_file(cfg.pretrain_path)
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    backbone = build_model(cfg, num_classes=cfg.toy.num_train_ids).backbone.state_dict()
    assert backbone.keys() == weights.keys()
    assert all(torch.equal(backbone[k], v.float()) for k, v in weights.items())


def test_shipped_model_config_is_the_demo_backbone():
    """The open_clip config beside the weights describes the demo's backbone (what export_open_clip wrote)."""
    cfg = demo_config()
    model_cfg = json.loads((Path(cfg.pretrain_path).parent / "open_clip_config.json").read_text())["model_cfg"]
    b = cfg.backbone
    assert model_cfg["embed_dim"] == b.embed_dim
    assert (model_cfg["vision_cfg"]["width"], model_cfg["vision_cfg"]["layers"]) == (b.vision_width, b.vision_layers)
    assert (model_cfg["text_cfg"]["width"], model_cfg["text_cfg"]["layers"]) == (b.text_width, b.text_layers)
    assert model_cfg["vision_cfg"]["image_size"] == cfg.img_size


def test_shipped_backbone_retrieves_people_it_never_saw(tmp_path):
    """Zero-shot (test.py --checkpoint pretrained) on a toy of other people: the pretrained backbone puts the right
    person first far more often than chance (1/20); random weights stay near chance."""
    toy = tmp_path / "toy"
    make_toy_dataset(toy, "CUHK-PEDES", num_train_ids=2, num_val_ids=2, num_test_ids=TEST_IDS, images_per_id=2,
                     image_size=[128, 48], seed=UNSEEN_TOY_SEED)
    torch.manual_seed(0)
    random_weights = tmp_path / "random.safetensors"
    save_file(CLIP.from_config(demo_config()).state_dict(), str(random_weights))

    def zero_shot_rank1(weights: str, out: str) -> float:
        return load_test_script().main(["--config_file", str(DEMO), "--checkpoint", "pretrained", "--root_dir",
                                        str(toy), "--pretrain_path", weights, "--out_dir", str(tmp_path / out)]
                                       )["metrics"]["R1"]

    ten_times_chance = 10 * 100 / TEST_IDS
    assert zero_shot_rank1(demo_config().pretrain_path, "shipped") >= ten_times_chance
    assert zero_shot_rank1(str(random_weights), "random") < ten_times_chance


def test_pretrain_choice_none_reads_no_weights_file():
    """--pretrain_choice none on the demo (docs/demo.md's from-scratch runs) trains from random weights although the
    config still names the file (test_evaluate: zero-shot then has nothing to evaluate)."""
    cfg = load_config(DEMO, {"pretrain_choice": "none", "pretrain_path": demo_config().pretrain_path})
    weights = load_file(cfg.pretrain_path)
    torch.manual_seed(0)
    backbone = build_model(cfg, num_classes=cfg.toy.num_train_ids).backbone.state_dict()
    assert not any(torch.equal(backbone[k], weights[k].float()) for k in ("token_embedding.weight", "visual.proj"))


def test_demo_started_elsewhere_fails_before_generating_data(tmp_path, monkeypatch):
    """From another working directory the demo's relative weights path names no file: one error naming the path it
    tried, and no toy dataset generated for a run that cannot start."""
    import train

    monkeypatch.chdir(tmp_path)
    with pytest.raises(PretrainedError, match=f"pretrain_path {tmp_path}/weights/demo_backbone/.*no such file"):
        train.main(["--config_file", str(DEMO)])
    assert list(tmp_path.iterdir()) == []
