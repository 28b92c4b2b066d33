"""Mixed precision (issue 15, point 2): under any autocast every loss is computed in float32 from the features the
towers hand over, so an autocast step differs from the fp32 step only by the towers' rounding; ``amp: auto``
picks bf16 where the GPU has it natively, else fp16."""
from __future__ import annotations

import logging
from typing import Any, Callable

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import model.build as build_module
from model.build import build_model
from tests.test_model import NUM_CLASSES, tiny_batch, tiny_cfg
from utils.config import load_config
from utils.precision import resolve_amp

aten = torch.ops.aten
# CPU autocast runs matrix products in either half-precision type (torch >= 2.4 accepts float16 on CPU).
CPU_AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)
LOSS_FUNCTIONS = ("compute_sdm", "compute_id", "compute_mlm", "compute_aqa")


class MatrixProducts(TorchDispatchMode):
    """Records the input dtypes and output shape of every 2-D matrix product (after autocast's casts)."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[tuple[torch.dtype, ...], tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (aten.mm.default, aten.addmm.default):
            self.seen.append((tuple(a.dtype for a in args if isinstance(a, torch.Tensor)), tuple(out.shape)))
        return out


def _recording(calls: list, fn: Callable) -> Callable:
    """``fn`` that also stores its arguments (detached copies) and its result."""
    def wrapper(*args: Any, **kwargs: Any):
        result = fn(*args, **kwargs)
        frozen = [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args]
        calls.append((fn, frozen, kwargs, result.detach()))
        return result
    return wrapper


@pytest.mark.parametrize("dtype", CPU_AUTOCAST_DTYPES)
def test_every_batch_by_batch_similarity_is_float32_under_autocast(dtype):
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = build_model(cfg, NUM_CLASSES)
    batch = tiny_batch(cfg)
    size = len(batch["pids"])
    products = MatrixProducts()
    with torch.autocast("cpu", dtype=dtype), products:
        model(batch)
    similarities = [dtypes for dtypes, shape in products.seen if shape == (size, size)]
    # SDM (one product, its transpose serves the other direction), AQA loss and AQA accuracy
    assert len(similarities) >= 3
    assert all(set(dtypes) == {torch.float32} for dtypes in similarities), similarities
    assert any(dtype in dtypes for dtypes, _ in products.seen)  # the towers did run in low precision


@pytest.mark.parametrize("dtype", CPU_AUTOCAST_DTYPES)
def test_losses_under_autocast_equal_the_same_inputs_outside_it(dtype, monkeypatch):
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = build_model(cfg, NUM_CLASSES)
    calls: list = []
    for name in LOSS_FUNCTIONS:
        monkeypatch.setattr(build_module, name, _recording(calls, getattr(build_module, name)))
    with torch.autocast("cpu", dtype=dtype):
        model(tiny_batch(cfg))
    assert sorted(fn.__name__ for fn, *_ in calls) == sorted(LOSS_FUNCTIONS)
    for fn, args, kwargs, result in calls:
        assert result.dtype == torch.float32, fn.__name__
        assert torch.equal(fn(*args, **kwargs), result), fn.__name__


def _step(net: torch.nn.Module, batch: dict[str, torch.Tensor],
          dtype: torch.dtype | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A training step's losses and all parameter gradients as one vector (``dtype`` None: fp32, no autocast)."""
    net.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        out = net(batch)
    losses = {k: v for k, v in out.items() if k.endswith("_loss")}
    sum(losses.values()).backward()
    grads = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
    return {k: v.detach() for k, v in losses.items()}, grads


def _assert_step_close_to_fp32(net: torch.nn.Module, batch: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    """Tolerances in units of the format's roundoff u (2^-8 for bf16, 2^-11 for fp16): every loss within 8 u
    relative (measured on the tiny model: up to 4 u, on AQA), the gradient of all parameters within 64 u relative
    in norm (measured: up to 15 u for bf16, 20 u for fp16, seeds 0-2)."""
    unit = torch.finfo(dtype).eps / 2
    reference, reference_grads = _step(net, batch, None)
    losses, grads = _step(net, batch, dtype)
    assert losses.keys() == reference.keys()
    for key, value in losses.items():
        assert value.dtype == torch.float32 and torch.isfinite(value)
        assert abs(value - reference[key]) <= 8 * unit * abs(reference[key]), (key, value, reference[key])
    assert torch.isfinite(grads).all()
    assert (grads - reference_grads).norm() <= 64 * unit * reference_grads.norm()


def _full_size_batch(cfg) -> dict[str, torch.Tensor]:
    """Two random captions (8 words, one masked for MLM and AQA) of two identities with random images."""
    length, vocab = cfg.text_length, cfg.backbone.vocab_size
    sot, eot, mask = vocab - 2, vocab - 1, vocab - 3
    ids = torch.zeros(2, length, dtype=torch.long)
    ids[:, 0], ids[:, 1:9], ids[:, 9] = sot, torch.randint(1, mask, (2, 8)), eot
    labels = torch.zeros_like(ids)
    labels[:, 3] = ids[:, 3]
    masked = ids.masked_fill(labels != 0, mask)
    return {"images": torch.randn(2, 3, *cfg.img_size), "caption_ids": ids, "pids": torch.tensor([7, 9]),
            "image_ids": torch.arange(2), "mlm_ids": masked, "mlm_labels": labels, "question_ids": masked,
            "question_mask": (ids != 0).long(), "answer_ids": ids}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", CPU_AUTOCAST_DTYPES)
def test_tiny_autocast_step_matches_fp32_within_roundoff(dtype, seed):
    torch.manual_seed(seed)
    cfg = tiny_cfg()
    _assert_step_close_to_fp32(build_model(cfg, NUM_CLASSES), tiny_batch(cfg, seed), dtype)


@pytest.mark.slow
def test_full_size_vit_b16_bf16_step_matches_fp32_within_roundoff():
    """bf16 only: CPUs without native fp16 emulate its matrix products (minutes at full size); the tiny model
    covers fp16."""
    torch.manual_seed(0)
    cfg = load_config(None, {"pretrain_choice": "none", "loss_names": "sdm+id+mlm+aqa"})
    _assert_step_close_to_fp32(build_model(cfg, num_classes=11003), _full_size_batch(cfg), torch.bfloat16)


@pytest.mark.parametrize("capability, expected", [((8, 0), "bf16"), ((9, 0), "bf16"), ((7, 0), "fp16")])
def test_amp_auto_is_bf16_on_ampere_and_later_else_fp16_and_says_so(capability, expected, monkeypatch, caplog):
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"GPU sm_{capability[0]}{capability[1]}")
    with caplog.at_level(logging.INFO):
        assert resolve_amp("auto", torch.device("cuda")) == expected
    assert f"amp auto: {expected} (GPU sm_{capability[0]}{capability[1]}" in caplog.text


def test_amp_auto_is_none_on_cpu_and_explicit_modes_are_kept():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) == "none"
    assert [resolve_amp(mode, cpu) for mode in ("fp16", "bf16", "none")] == ["fp16", "bf16", "none"]
