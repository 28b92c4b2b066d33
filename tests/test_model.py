"""Training model recipes, accuracies, checkpointing, autocast, zero inference cost; helpers for model tests."""
from __future__ import annotations

import contextlib

import pytest
import torch

from model.build import MLM_OVERFLOW, TrainingModel, build_model, build_retrieval_model, retrieval_state_dict
from model.clip import CLIP
from utils.config import load_config

TINY = {
    "img_size": [32, 16], "stride_size": 8, "text_length": 12, "pretrain_choice": "none",
    "backbone.embed_dim": 32, "backbone.vision_width": 48, "backbone.vision_layers": 4, "backbone.vision_heads": 4,
    "backbone.patch_size": 8, "backbone.text_width": 40, "backbone.text_layers": 4, "backbone.text_heads": 4,
    "backbone.vocab_size": 64, "mlm.cmt_depth": 1, "mlm.heads": 4, "sgiha.layers": [1, 2, 3], "sgiha.heads": 4,
}
NUM_CLASSES = 5
# relative change of the whole gradient under autocast: bf16 keeps 8 mantissa bits, which moves the tiny model's
# gradient by about 5%; a lost or rescaled loss term moves it by far more
AUTOCAST_GRAD_RTOL = 0.1
RECIPES = ("sdm+id", "sdm+id+mlm", "sdm+id+aqa", "sdm+id+mlm+aqa")


def tiny_cfg(**overrides):
    """A small backbone (4x2 patches, 4 blocks per tower) with any config key overridden."""
    return load_config(None, {**TINY, **overrides})


def _texts(gen: torch.Generator, cfg, lengths: list[int], low: int, high: int) -> torch.Tensor:
    """SOT + random word ids in [low, high) + EOT, zero padded; SOT/EOT are the two largest ids."""
    vocab = cfg.backbone.vocab_size
    ids = torch.zeros(len(lengths), cfg.text_length, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, 0] = vocab - 2
        ids[row, 1:n + 1] = torch.randint(low, high, (n,), generator=gen)
        ids[row, n + 1] = vocab - 1
    return ids


def tiny_batch(cfg, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of 4 with a repeated identity; question words in the lower, answer words in the upper id half."""
    gen = torch.Generator().manual_seed(seed)
    vocab = cfg.backbone.vocab_size
    mask_id, half = vocab - 3, vocab // 2
    captions = _texts(gen, cfg, [5, 7, 3, 9], 1, mask_id)
    mlm_labels = torch.zeros_like(captions)
    mlm_labels[:, 2] = captions[:, 2]  # every caption has a word at position 2
    mlm_ids = captions.masked_fill(mlm_labels != 0, mask_id)
    questions = _texts(gen, cfg, [6, 4, 8, 5], 1, half)
    questions[:, 3] = mask_id
    return {
        "images": torch.randn(4, 3, *cfg.img_size, generator=gen),
        "caption_ids": captions, "pids": torch.tensor([0, 3, 0, 1]), "image_ids": torch.arange(4),
        "mlm_ids": mlm_ids, "mlm_labels": mlm_labels,
        "question_ids": questions, "question_mask": (torch.arange(cfg.text_length) <= questions.argmax(1, True)).long(),
        "answer_ids": _texts(gen, cfg, [2, 3, 1, 2], half, mask_id),
    }


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_builds_only_its_modules_and_returns_its_outputs(recipe):
    torch.manual_seed(0)
    cfg = tiny_cfg(loss_names=recipe)
    model = build_model(cfg, NUM_CLASSES)
    losses = recipe.split("+")
    expected_modules = {"backbone", "classifier"}
    if "mlm" in losses:
        expected_modules |= {"cross_attn", "cross_modal_transformer", "ln_pre_t", "ln_pre_i", "ln_post", "mlm_head"}
    if "aqa" in losses:
        expected_modules.add("sgiha")
    assert {name for name, _ in model.named_children()} == expected_modules
    out = model(tiny_batch(cfg))
    expected_keys = {f"{n}_loss" for n in losses} | {"img_acc", "txt_acc"}
    expected_keys |= {"mlm_acc"} | ({MLM_OVERFLOW} if cfg.fixed_shapes else set()) if "mlm" in losses else set()
    expected_keys |= {"aqa_acc"} if "aqa" in losses else set()
    assert set(out) == expected_keys
    for key, value in out.items():
        assert value.dim() == 0 and torch.isfinite(value), key
        assert value.requires_grad == key.endswith("_loss"), key
    sum(v for k, v in out.items() if k.endswith("_loss")).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, f"parameters built but not used by {recipe}: {unused[:5]}"
    assert not model.backbone.logit_scale.requires_grad  # method §5: the scale is fixed


def test_loss_weights_scale_each_loss():
    torch.manual_seed(0)
    model = build_model(tiny_cfg(), NUM_CLASSES)
    batch = tiny_batch(tiny_cfg())
    base = model(batch)
    weights = {"sdm": 2.0, "id": 0.5, "mlm": 3.0, "aqa": 0.25}
    for name, weight in weights.items():
        model.loss_weights[name] = weight
    weighted = model(batch)
    for name, weight in weights.items():
        torch.testing.assert_close(weighted[f"{name}_loss"], base[f"{name}_loss"] * weight)


def test_accuracies_match_a_direct_count():
    torch.manual_seed(0)
    cfg = tiny_cfg(loss_names="sdm+id")
    model = build_model(cfg, NUM_CLASSES)
    batch = tiny_batch(cfg)
    # Make the classifier answer exactly one known class for every input: only pid 0 rows are right.
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.arange(NUM_CLASSES) == 0)
    out = model(batch)
    expected = sum(int(p == 0) for p in batch["pids"]) / len(batch["pids"])
    assert out["img_acc"].item() == pytest.approx(expected) and out["txt_acc"].item() == pytest.approx(expected)


def test_grad_checkpoint_gives_the_same_losses_and_gradients():
    results = []
    for flag in (False, True):
        torch.manual_seed(0)
        cfg = tiny_cfg(grad_checkpoint=flag)
        model = build_model(cfg, NUM_CLASSES)
        out = model(tiny_batch(cfg))
        sum(v for k, v in out.items() if k.endswith("_loss")).backward()
        results.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (out_a, grad_a), (out_b, grad_b) = results
    for key in out_a:
        torch.testing.assert_close(out_a[key], out_b[key])
    assert grad_a.keys() == grad_b.keys()
    for name in grad_a:
        torch.testing.assert_close(grad_a[name], grad_b[name], rtol=1e-4, atol=1e-6)


def _step(model: TrainingModel, batch: dict, context) -> tuple[dict, dict]:
    """Outputs and parameter gradients of one forward and backward pass under ``context``."""
    model.zero_grad(set_to_none=True)
    with context:
        out = model(batch)
    sum(v for k, v in out.items() if k.endswith("_loss")).backward()
    return ({k: v.detach() for k, v in out.items()},
            {name: p.grad for name, p in model.named_parameters() if p.grad is not None})


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_training_step_is_finite_and_close_to_fp32(dtype):
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = build_model(cfg, NUM_CLASSES)
    batch = tiny_batch(cfg)
    reference, fp32 = _step(model, batch, contextlib.nullcontext())
    out, low = _step(model, batch, torch.autocast("cpu", dtype=dtype))
    for key in reference:
        if key.endswith("_loss"):
            torch.testing.assert_close(out[key], reference[key], rtol=0.05, atol=0.05)
    assert low.keys() == fp32.keys()  # autocast cuts no loss off any parameter
    assert all(torch.isfinite(g).all() for g in low.values())
    flat = [torch.cat([g[name].flatten().float() for name in fp32]) for g in (fp32, low)]
    assert float((flat[1] - flat[0]).norm() / flat[0].norm()) < AUTOCAST_GRAD_RTOL


@pytest.mark.parametrize("recipe", RECIPES)
def test_retrieval_model_has_exactly_the_backbone_and_its_features(recipe):
    torch.manual_seed(0)
    cfg = tiny_cfg(loss_names=recipe)
    trained = build_model(cfg, NUM_CLASSES)
    retrieval = build_retrieval_model(cfg)
    retrieval.load_state_dict(retrieval_state_dict(trained.state_dict()))
    count = sum(p.numel() for p in retrieval.parameters())
    assert count == sum(p.numel() for p in trained.backbone.parameters())
    batch = tiny_batch(cfg)
    torch.testing.assert_close(retrieval.encode_image(batch["images"]),
                               trained.backbone.encode_image(batch["images"]), rtol=0, atol=0)
    torch.testing.assert_close(retrieval.encode_text(batch["caption_ids"]),
                               trained.backbone.encode_text(batch["caption_ids"]), rtol=0, atol=0)


def test_retrieval_state_dict_accepts_plain_and_wrapped_dicts_and_rejects_others():
    cfg = tiny_cfg(loss_names="sdm+id")
    plain = CLIP.from_config(cfg).state_dict()
    assert retrieval_state_dict(plain).keys() == plain.keys()
    compiled = {f"_orig_mod.backbone.{k}": v for k, v in plain.items()} | {"_orig_mod.classifier.weight": None}
    assert retrieval_state_dict(compiled).keys() == plain.keys()
    with pytest.raises(ValueError, match="visual.conv1.weight"):
        retrieval_state_dict({"classifier.weight": torch.zeros(1)})


def test_mismatched_image_size_is_a_clear_error():
    model = TrainingModel(tiny_cfg(loss_names="sdm+id"), NUM_CLASSES)
    batch = tiny_batch(tiny_cfg())
    batch["images"] = torch.zeros(4, 3, 40, 16)
    with pytest.raises(ValueError, match="img_size"):
        model(batch)


def test_batch_without_a_loss_input_is_a_clear_error():
    cfg = tiny_cfg()
    model = TrainingModel(cfg, NUM_CLASSES)
    batch = tiny_batch(cfg)
    del batch["question_mask"]
    with pytest.raises(KeyError, match="'aqa' needs batch entries \\['question_mask'\\]"):
        model(batch)
    batch = tiny_batch(cfg)
    batch["answer_ids"] = batch["answer_ids"][:, :5]
    with pytest.raises(ValueError, match="one length"):
        model(batch)


@pytest.mark.slow
def test_full_size_vit_b16_irra_sgiha_forward_backward_at_batch_2():
    torch.manual_seed(0)
    cfg = load_config(None, {"pretrain_choice": "none", "loss_names": "sdm+id+mlm+aqa"})
    model = build_model(cfg, num_classes=11003)
    length, vocab = cfg.text_length, cfg.backbone.vocab_size
    ids = torch.zeros(2, length, dtype=torch.long)
    ids[:, 0], ids[:, 1:9], ids[:, 9] = vocab - 2, torch.randint(1, 49404, (2, 8)), vocab - 1
    labels = torch.zeros_like(ids)
    labels[:, 3] = ids[:, 3]
    batch = {"images": torch.randn(2, 3, *cfg.img_size), "caption_ids": ids, "pids": torch.tensor([7, 7]),
             "image_ids": torch.arange(2), "mlm_ids": ids.masked_fill(labels != 0, 49405), "mlm_labels": labels,
             "question_ids": ids.masked_fill(labels != 0, 49405), "question_mask": (ids != 0).long(),
             "answer_ids": ids}
    out = model(batch)
    loss = sum(v for k, v in out.items() if k.endswith("_loss"))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.backbone.visual.transformer.resblocks[5].attn.in_proj_weight.grad.abs().sum() > 0
    assert model.sgiha.blocks[0].filter.fc.weight.grad.abs().sum() > 0
