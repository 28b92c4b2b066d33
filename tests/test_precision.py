"""Mixed precision (issue 15, point 2): under any autocast every loss is computed in float32 from the features the
towers hand over, so an autocast step differs from the fp32 step only by the towers' rounding."""
from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import model.build as build_module
from model.build import build_model
from tests.test_model import NUM_CLASSES, tiny_batch, tiny_cfg

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
