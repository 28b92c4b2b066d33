"""Pretrained loading: OpenAI TorchScript archive and state dict, grid resize, cache, offline and shape errors."""
from __future__ import annotations

import socket

import pytest
import torch

import model.pretrained as pretrained
from model.build import build_model
from model.clip import CLIP
from model.pretrained import PretrainedError, load_pretrained, openai_state_dict, resize_pos_embed
from tests.test_model import tiny_cfg

SOURCE = {"img_size": [32, 32], "backbone.pretrain_grid": [4, 4]}  # "pretrained" at a square 4x4 grid
EXTRAS = {"input_resolution": 32, "context_length": 12, "vocab_size": 64}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny CLIP saved as an fp16 TorchScript archive in OpenAI's layout and as a plain fp16 state dict."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("weights")
    source = CLIP.from_config(tiny_cfg(**SOURCE)).eval()
    for name, value in EXTRAS.items():  # OpenAI's archives carry these scalars
        source.register_buffer(name, torch.tensor(value))
    traced = torch.jit.trace(source, (torch.zeros(1, 3, 32, 32), torch.ones(1, 12, dtype=torch.long)))
    traced = traced.half()  # OpenAI ships fp16 weights
    traced.save(str(folder / "tiny.pt"))
    weights = {k: v for k, v in traced.state_dict().items() if k not in EXTRAS}
    torch.save(weights, folder / "tiny_state_dict.pth")
    return folder / "tiny.pt", folder / "tiny_state_dict.pth", weights


def _bilinear_reference(values, src: tuple[int, int], dst: tuple[int, int]):
    """Where each output cell samples the input (half-pixel centres, clamped at the border)."""
    coords = []
    for size_in, size_out in zip(src, dst):
        scale = size_in / size_out
        coords.append([min(max((i + 0.5) * scale - 0.5, 0.0), size_in - 1.0) for i in range(size_out)])
    return [[values(r, c) for c in coords[1]] for r in coords[0]]


def test_grid_resize_reproduces_a_smooth_function_of_position():
    width, src, dst = 3, (14, 14), (24, 8)

    def field(r: float, c: float) -> list[float]:  # linear in position: bilinear sampling is exact on it
        return [0.5 * r - 0.25 * c + k for k in range(width)]

    table = torch.tensor([[9.0] * width] + [field(r, c) for r in range(src[0]) for c in range(src[1])])
    resized = resize_pos_embed(table, src, dst)
    assert resized.shape == (1 + dst[0] * dst[1], width)
    torch.testing.assert_close(resized[0], table[0])  # the CLS row is kept
    expected = torch.tensor(_bilinear_reference(field, src, dst)).reshape(-1, width)
    torch.testing.assert_close(resized[1:], expected)


def test_archive_and_state_dict_load_identical_weights(checkpoints):
    archive, state_file, weights = checkpoints
    loaded = []
    for path in (archive, state_file):
        model = CLIP.from_config(tiny_cfg())  # 32x16 input: 4x2 grid, so the 4x4 table is resized
        load_pretrained(model, "ViT-B/16", str(path), pretrain_grid=[4, 4])
        loaded.append(model.state_dict())
    assert loaded[0].keys() == loaded[1].keys() == weights.keys()
    for key in weights:
        torch.testing.assert_close(loaded[0][key], loaded[1][key], rtol=0, atol=0)
        if key != "visual.positional_embedding":
            torch.testing.assert_close(loaded[0][key], weights[key].float(), rtol=0, atol=0)
    pos = weights["visual.positional_embedding"].float()
    torch.testing.assert_close(loaded[0]["visual.positional_embedding"], resize_pos_embed(pos, (4, 4), (4, 2)))


def test_build_model_loads_the_configured_file(checkpoints):
    archive, _, weights = checkpoints
    cfg = tiny_cfg(pretrain_choice="ViT-B/16", pretrain_path=str(archive), **{"backbone.pretrain_grid": [4, 4]})
    model = build_model(cfg, num_classes=3)
    torch.testing.assert_close(model.backbone.visual.conv1.weight, weights["visual.conv1.weight"].float())


@pytest.mark.parametrize("override, config_key", [({"backbone.vision_width": 24}, "backbone.vision_width"),
                                                  ({"backbone.text_layers": 3}, "backbone.text_layers"),
                                                  ({"backbone.embed_dim": 16}, "backbone.embed_dim")])
def test_shape_mismatch_names_the_config_keys(checkpoints, override, config_key):
    archive = checkpoints[0]
    model = CLIP.from_config(tiny_cfg(**override))
    with pytest.raises(PretrainedError, match=config_key):
        load_pretrained(model, "ViT-B/16", str(archive), pretrain_grid=[4, 4])


def test_wrong_pretrained_grid_names_its_config_key(checkpoints):
    model = CLIP.from_config(tiny_cfg())
    with pytest.raises(PretrainedError, match="backbone.pretrain_grid"):
        load_pretrained(model, "ViT-B/16", str(checkpoints[0]), pretrain_grid=[14, 14])


def test_unreadable_or_missing_file_is_a_clear_error(tmp_path):
    model = CLIP.from_config(tiny_cfg())
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedError, match="junk.pt"):
        load_pretrained(model, "ViT-B/16", str(junk))
    with pytest.raises(PretrainedError, match="no such file"):
        load_pretrained(model, "ViT-B/16", str(tmp_path / "absent.pt"))


@pytest.fixture
def empty_caches(monkeypatch, tmp_path):
    """No weights in the Hugging Face or URL caches."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(pretrained, "URL_CACHE_DIR", tmp_path / "clip")
    return tmp_path / "clip"


def test_offline_without_a_file_says_where_to_put_it(empty_caches, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(PretrainedError, match=r"offline.*ViT-B-16\.pt.*pretrain_path"):
        openai_state_dict("ViT-B/16")


def test_hf_hub_offline_flag_skips_the_network(empty_caches, monkeypatch):
    from huggingface_hub import constants

    def network_used(*args, **kwargs):
        raise AssertionError("the network was probed although HF_HUB_OFFLINE is set")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket, "create_connection", network_used)
    with pytest.raises(PretrainedError, match="pretrain_path"):
        openai_state_dict("ViT-L/14")


def test_weights_already_in_the_clip_cache_are_used_without_network(checkpoints, empty_caches, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    empty_caches.mkdir()
    (empty_caches / "ViT-B-16.pt").write_bytes(checkpoints[0].read_bytes())  # OpenAI's URL file name
    state = openai_state_dict("ViT-B/16")
    torch.testing.assert_close(state["visual.proj"], checkpoints[2]["visual.proj"], rtol=0, atol=0)
