"""CLIP backbone: same outputs as the CLIP package's ViT-B/16, layer taps, attention, patch grid."""
from __future__ import annotations

import logging

import open_clip
import pytest
import torch
from torch import nn

from model.clip import CLIP, patch_grid
from model.transformer import MultiheadAttention
from tests.test_model import tiny_batch, tiny_cfg
from utils.config import load_config


@pytest.mark.slow
def test_same_weights_give_the_clip_package_vit_b16_features(caplog):
    torch.manual_seed(0)
    caplog.set_level(logging.ERROR)  # open_clip warns that pretrained=None means random weights
    reference = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).eval()
    cfg = load_config(None, {"img_size": [224, 224], "pretrain_choice": "none"})
    model = CLIP.from_config(cfg).eval()
    # Same key names and shapes, nothing missing or extra: a strict load is the layout check.
    model.load_state_dict(reference.state_dict(), strict=True)
    images = torch.randn(2, 3, 224, 224)
    ids = open_clip.get_tokenizer("ViT-B-16-quickgelu")(["a woman in a red coat", "a man with a black backpack"])
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), reference.encode_image(images), rtol=0, atol=1e-5)
        torch.testing.assert_close(model.encode_text(ids), reference.encode_text(ids), rtol=0, atol=1e-5)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())


def _manual_tower(blocks: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
    """Residual-stream states 0..L computed block by block."""
    states = [x]
    for block in blocks:
        states.append(block(states[-1]))
    return states


def test_hidden_states_are_the_requested_residual_stream_states_only():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = CLIP.from_config(cfg).eval()
    batch = tiny_batch(cfg)
    images, ids = batch["images"], batch["caption_ids"]
    visual = model.visual
    patches = visual.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(4, 1, -1), patches], 1) + visual.positional_embedding
    image_states = _manual_tower(visual.transformer.resblocks, visual.ln_pre(x))
    text_states = _manual_tower(model.transformer.resblocks, model.token_embedding(ids) + model.positional_embedding)
    with torch.no_grad():
        image = model.image_features(images, layers=[0, 2, 4])
        text = model.text_features(ids, layers=[1, 3])
    assert sorted(image.hidden) == [0, 2, 4] and sorted(text.hidden) == [1, 3]
    for index, state in image.hidden.items():
        torch.testing.assert_close(state, image_states[index])
    for index, state in text.hidden.items():
        torch.testing.assert_close(state, text_states[index])
    torch.testing.assert_close(image.tokens, visual.ln_post(image_states[-1]) @ visual.proj)
    torch.testing.assert_close(image.global_feat, image.tokens[:, 0])
    eot = [int(row.tolist().index(max(row.tolist()))) for row in ids]
    torch.testing.assert_close(text.global_feat, torch.stack([text.tokens[i, e] for i, e in enumerate(eot)]))
    with pytest.raises(ValueError, match="outside 0..4"):
        model.image_features(images, layers=[5])


def test_text_attention_is_causal_as_torch_multihead_attention_with_a_mask():
    torch.manual_seed(0)
    ours = MultiheadAttention(16, 4)
    theirs = nn.MultiheadAttention(16, 4, batch_first=True)
    theirs.load_state_dict(ours.state_dict())
    x, context = torch.randn(3, 7, 16), torch.randn(3, 5, 16)
    causal = torch.triu(torch.full((7, 7), float("-inf")), diagonal=1)
    torch.testing.assert_close(ours(x, is_causal=True), theirs(x, x, x, attn_mask=causal, need_weights=False)[0])
    torch.testing.assert_close(ours(x, context), theirs(x, context, context, need_weights=False)[0])


def test_text_features_ignore_tokens_after_the_eot():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = CLIP.from_config(cfg).eval()
    ids = tiny_batch(cfg)["caption_ids"]
    changed = ids.clone()
    changed[0, -1] = 5  # after row 0's EOT: the causal mask keeps it out of the EOT feature
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(changed)[0], model.encode_text(ids)[0])


@pytest.mark.parametrize("img_size, patch, stride, grid", [
    ((384, 128), 16, 16, (24, 8)), ((384, 128), 16, 12, (31, 10)), ((224, 224), 16, 16, (14, 14))])
def test_patch_grid_counts_positions_of_the_convolution(img_size, patch, stride, grid):
    assert patch_grid(img_size, patch, stride) == grid
    out = nn.Conv2d(3, 1, patch, stride)(torch.zeros(1, 3, *img_size))
    assert tuple(out.shape[-2:]) == grid


def test_overlapping_patches_size_the_positional_table():
    cfg = tiny_cfg(stride_size=4)  # patch 8, stride 4 on 32x16: 7x3 positions
    model = CLIP.from_config(cfg)
    assert model.visual.positional_embedding.shape == (7 * 3 + 1, cfg.backbone.vision_width)
    assert model.encode_image(torch.zeros(1, 3, 32, 16)).shape == (1, cfg.backbone.embed_dim)
