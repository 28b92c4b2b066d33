"""configs/demo_pretrained.yaml starts from a weights file the user builds (docs/demo.md point 15): a missing file
fails before any work, and pretrain_choice none never reads the file it names."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from model.build import build_model
from model.clip import CLIP
from model.pretrained import PretrainedError
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
    backbone = build_model(cfg, num_classes=cfg.toy.num_train_ids).backbone.state_dict()
    assert not any(torch.equal(backbone[k], weights[k]) for k in ("token_embedding.weight", "visual.proj"))


def test_demo_started_without_its_weights_fails_before_generating_data(tmp_path, monkeypatch):
    """Without the built weights (or from another working directory) the relative weights path names no file: one
    error naming the path it tried, and no toy dataset generated for a run that cannot start."""
    import train

    monkeypatch.chdir(tmp_path)
    with pytest.raises(PretrainedError, match=f"pretrain_path {tmp_path}/data/demo_backbone/.*no such file"):
        train.main(["--config_file", str(DEMO_PRETRAINED)])
    assert list(tmp_path.iterdir()) == []
