"""SG-IHA head: gradient routes (detach_hidden), noise filter variants, question mask, CLS exclusion, sizes."""
from __future__ import annotations

import pytest
import torch

from model.build import build_model
from model.sgiha import SGIHAHead
from tests.test_model import NUM_CLASSES, tiny_batch, tiny_cfg


def _aqa_backward(detach: bool, filter_kind: str = "dot"):
    """AQA loss alone, backpropagated; returns the model, batch and the captured image global feature."""
    torch.manual_seed(0)
    cfg = tiny_cfg(loss_names="sdm+id+aqa", **{"sgiha.detach_hidden": detach, "sgiha.filter": filter_kind})
    model = build_model(cfg, NUM_CLASSES)
    captured = {}

    def keep_global(module, inputs, output):
        output.global_feat.retain_grad()
        captured["global"] = output.global_feat

    model.backbone.visual.register_forward_hook(keep_global)
    batch = tiny_batch(cfg)
    model(batch)["aqa_loss"].backward(retain_graph=True)
    return model, batch, captured["global"]


def _question_only_tokens(batch) -> list[int]:
    question, answer = set(batch["question_ids"].flatten().tolist()), set(batch["answer_ids"].flatten().tolist())
    return sorted(question - answer)


def _grad_through_global_only(model, global_feat) -> list[torch.Tensor]:
    """Image-tower parameter gradients if the loss reached them only through the image global feature."""
    params = list(model.backbone.visual.parameters())
    grads = torch.autograd.grad(global_feat, params, grad_outputs=global_feat.grad, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def test_gradients_reach_the_tapped_layers_when_not_detached():
    model, batch, global_feat = _aqa_backward(detach=False)
    for layer in model.sgiha.layers:
        assert model.backbone.visual.transformer.resblocks[layer - 1].mlp.c_fc.weight.grad.abs().sum() > 0
        assert model.backbone.transformer.resblocks[layer - 1].mlp.c_fc.weight.grad.abs().sum() > 0
    # Tokens that only the question holds get gradient: the question's hidden states are trained.
    token_grad = model.backbone.token_embedding.weight.grad
    assert all(token_grad[t].abs().sum() > 0 for t in _question_only_tokens(batch))
    # The image tower's gradient has more than the global-feature route.
    through_global = _grad_through_global_only(model, global_feat)
    actual = [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.backbone.visual.parameters()]
    assert any(not torch.allclose(a, g, atol=1e-7) for a, g in zip(actual, through_global))


def test_detached_hidden_states_leave_only_the_global_feature_and_answer_routes():
    model, batch, global_feat = _aqa_backward(detach=True)
    token_grad = model.backbone.token_embedding.weight.grad
    assert all(token_grad[t].abs().sum() == 0 for t in _question_only_tokens(batch))
    answer_tokens = set(batch["answer_ids"].flatten().tolist()) - {0}
    assert all(token_grad[t].abs().sum() > 0 for t in answer_tokens)
    through_global = _grad_through_global_only(model, global_feat)
    for param, expected in zip(model.backbone.visual.parameters(), through_global):
        torch.testing.assert_close(param.grad if param.grad is not None else torch.zeros_like(param), expected)
    assert model.backbone.visual.transformer.resblocks[0].mlp.c_fc.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("filter_kind", ["dot", "res"])
def test_noise_filters_get_gradients(detach, filter_kind):
    model = _aqa_backward(detach, filter_kind)[0]
    for block in model.sgiha.blocks:
        assert block.filter.fc.weight.grad.abs().sum() > 0 and block.filter.norm.weight.grad.abs().sum() > 0


def _head_inputs(cfg, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    b = cfg.backbone
    tokens = 1 + (cfg.img_size[0] // b.patch_size) * (cfg.img_size[1] // b.patch_size)
    visual = {k: torch.randn(3, tokens, b.vision_width, generator=gen) for k in cfg.sgiha.layers}
    text = {k: torch.randn(3, cfg.text_length, b.text_width, generator=gen) for k in cfg.sgiha.layers}
    mask = torch.zeros(3, cfg.text_length, dtype=torch.long)
    mask[:, :5] = 1
    return torch.randn(3, b.embed_dim, generator=gen), visual, text, mask


def test_padded_question_positions_and_the_cls_token_do_not_change_the_output():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    head = SGIHAHead(cfg).eval()
    global_feat, visual, text, mask = _head_inputs(cfg)
    with torch.no_grad():
        reference = head(global_feat, visual, text, mask)
        padded = {k: v.clone() for k, v in text.items()}
        for v in padded.values():
            v[:, 5:] += 3 * torch.randn_like(v[:, 5:])  # positions the mask marks as padding
        torch.testing.assert_close(head(global_feat, visual, padded, mask), reference)
        without_cls = {k: v.clone() for k, v in visual.items()}
        for v in without_cls.values():
            v[:, 0] = 3 * torch.randn_like(v[:, 0])
        torch.testing.assert_close(head(global_feat, without_cls, text, mask), reference)
        # A real question position does matter, and so does the padding once it is unmasked.
        real = {k: v.clone() for k, v in text.items()}
        for v in real.values():
            v[:, 5 - 1] += 3 * torch.randn_like(v[:, 5 - 1])
        assert not torch.allclose(head(global_feat, visual, real, mask), reference, atol=1e-3)
        assert not torch.allclose(head(global_feat, visual, padded, torch.ones_like(mask)),
                                  head(global_feat, visual, text, torch.ones_like(mask)), atol=1e-3)


def test_filter_variants_follow_their_formulas():
    torch.manual_seed(0)
    heads = {kind: SGIHAHead(tiny_cfg(**{"sgiha.filter": kind})) for kind in ("dot", "res", "none")}
    assert all(block.filter is None for block in heads["none"].blocks)
    tokens, global_feat = torch.randn(2, 9, 48), torch.randn(2, 32)
    for kind in ("dot", "res"):
        flt = heads[kind].blocks[0].filter
        with torch.no_grad():
            normed = (global_feat - global_feat.mean(-1, keepdim=True)) / torch.sqrt(
                global_feat.var(-1, unbiased=False, keepdim=True) + flt.norm.eps)
            guide = (normed @ flt.fc.weight.t() + flt.fc.bias)[:, None, :]
            expected = tokens / (1 + torch.exp(-guide)) + (guide if kind == "res" else 0)
            torch.testing.assert_close(flt(tokens, global_feat), expected, rtol=1e-5, atol=1e-5)
    assert heads["dot"].blocks[0].filter.norm.eps == 1e-5 and heads["dot"].blocks[0].cross.norm_q.eps == 1e-6
    # Without a filter the image global feature plays no part.
    _, visual, text, mask = _head_inputs(tiny_cfg())
    with torch.no_grad():
        a = heads["none"](torch.zeros(3, 32), visual, text, mask)
        b = heads["none"](torch.ones(3, 32), visual, text, mask)
    torch.testing.assert_close(a, b)


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def test_full_size_parameter_count_matches_spec_6_3():
    d, wv, wt, ratio = 512, 768, 512, 4
    norm = 2 * d
    filter_params = norm + _linear(d, wv)
    cross = 2 * wt + 2 * wv + _linear(wt, d) + _linear(wv, 2 * d) + _linear(d, d)
    self_attn = norm + _linear(d, 3 * d) + _linear(d, d)
    mlp = norm + _linear(d, ratio * d) + _linear(ratio * d, d)
    per_block = filter_params + cross + self_attn + mlp
    from utils.config import load_config

    with torch.device("meta"):  # shapes only: nothing is allocated
        head = SGIHAHead(load_config(None, {}))
    assert sum(p.numel() for p in head.blocks[0].parameters()) == per_block
    assert sum(p.numel() for p in head.parameters()) == 6 * per_block + norm + _linear(d, d)


def test_attention_probabilities_are_the_ones_forward_applies():
    """CrossAttention.attention (grounding maps): its probabilities times the values, merged and projected, give
    forward's output; each row is a distribution over the patches."""
    from model.transformer import merge_heads, split_heads

    torch.manual_seed(0)
    cfg = tiny_cfg(loss_names="sdm+id+aqa")
    cross = SGIHAHead(cfg).blocks[0].cross
    text = torch.randn(3, 7, cfg.backbone.text_width)
    patches = torch.randn(3, 11, cfg.backbone.vision_width)
    probs = cross.attention(text, patches)
    assert probs.shape == (3, cfg.sgiha.heads, 7, 11)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, cfg.sgiha.heads, 7))
    values = split_heads(cross.kv(cross.norm_kv(patches)).chunk(2, dim=-1)[1], cfg.sgiha.heads)
    torch.testing.assert_close(cross.proj(merge_heads(probs @ values)), cross(text, patches), atol=1e-6, rtol=1e-5)
