"""Without fixed_shapes the training model encodes captions, questions and answers only up to their last used
position: same losses and gradients as full-length passes, fewer positions."""
import pytest
import torch

from model.build import build_model
from model.objectives import compute_id, compute_sdm
from model.shard import LOCAL
from tests.test_model import NUM_CLASSES, RECIPES, _texts, tiny_batch, tiny_cfg

TEXT_LENGTH = 20  # longer than tiny_batch's texts (at most 11 positions), so that the padding is long


def full_length_losses(model, batch) -> dict[str, torch.Tensor]:
    """Reference: every text through the text tower at full length, losses from the same parts."""
    taps = model.sgiha.layers if "aqa" in model.losses else ()
    image = model.backbone.image_features(batch["images"], taps)
    caption = model.backbone.text_features(batch["caption_ids"]).global_feat
    out = {"sdm_loss": compute_sdm(image.global_feat, caption, batch["pids"], model.logit_scale),
           "id_loss": compute_id(model.classifier(image.global_feat), model.classifier(caption), batch["pids"])}
    if "mlm" in model.losses:
        tokens = model.backbone.text_features(batch["mlm_ids"]).tokens
        out["mlm_loss"] = model._mlm(tokens, image.tokens, batch["mlm_labels"], LOCAL)["mlm_loss"]
    if "aqa" in model.losses:
        question = model.backbone.text_features(batch["question_ids"], taps).hidden
        answer = model.backbone.text_features(batch["answer_ids"]).global_feat
        out["aqa_loss"] = model._aqa(image, question, answer, batch["question_mask"], LOCAL)[0]
    return out


def gradients(model, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    sum(v for k, v in losses.items() if k.endswith("_loss")).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("recipe", RECIPES)
def test_short_passes_give_the_full_length_losses_and_gradients(recipe):
    torch.manual_seed(0)
    cfg = tiny_cfg(loss_names=recipe, text_length=TEXT_LENGTH, fixed_shapes=False)
    # float64: the two computations differ only by rounding, which float32 would show at ~1e-6 of each gradient.
    model = build_model(cfg, NUM_CLASSES).double()
    batch = tiny_batch(cfg)
    batch["images"] = batch["images"].double()
    reference = full_length_losses(model, batch)
    expected_grads = gradients(model, reference)
    out = model(batch)
    for key, value in reference.items():
        torch.testing.assert_close(out[key], value, rtol=1e-6, atol=1e-9)
    got_grads = gradients(model, out)
    assert got_grads.keys() == expected_grads.keys()
    for name, grad in expected_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-7, atol=1e-9)


def test_each_text_pass_keeps_only_the_used_positions(monkeypatch):
    torch.manual_seed(0)
    cfg = tiny_cfg(text_length=TEXT_LENGTH, fixed_shapes=False)
    model = build_model(cfg, NUM_CLASSES)
    batch = tiny_batch(cfg)
    shapes = []
    encode = model.backbone.text_features
    monkeypatch.setattr(model.backbone, "text_features", lambda ids, layers=(): shapes.append(ids.shape)
                        or encode(ids, layers))
    model(batch)
    caption_end = int(batch["caption_ids"].argmax(1).max()) + 1  # by hand: last EOT + 1
    question_end = max(int(batch["question_mask"][i].nonzero().max()) + 1 for i in range(4))
    answer_end = int(batch["answer_ids"].argmax(1).max()) + 1
    assert shapes == [(8, max(caption_end, question_end)), (4, TEXT_LENGTH), (4, answer_end)]
    assert max(caption_end, question_end) < TEXT_LENGTH and answer_end < caption_end


@pytest.mark.slow
def test_compiled_model_recompiles_once_for_new_text_lengths():
    """compile: true meets a new kept length at most steps: torch.compile recompiles once, then the length is
    dynamic (the eager backend traces like inductor, without compiling kernels)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    torch.manual_seed(0)
    cfg = tiny_cfg(loss_names="sdm+id", text_length=TEXT_LENGTH, fixed_shapes=False)
    compiled = torch.compile(build_model(cfg, NUM_CLASSES), backend="eager")
    graphs = []
    for words in (3, 6, 9, 12, 15):  # five kept lengths: 5, 8, 11, 14, 17 positions
        batch = tiny_batch(cfg)
        batch["caption_ids"] = _texts(torch.Generator().manual_seed(words), cfg, [words] * 4, 1, 50)
        assert int(batch["caption_ids"].argmax(1).max()) + 1 == words + 2
        sum(v for k, v in compiled(batch).items() if k.endswith("_loss")).backward()
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[1] > graphs[0] and graphs[1:] == [graphs[1]] * 4
    torch._dynamo.reset()
