"""fixed_shapes: a training step with the same shapes every batch and no host synchronisation, equal to the
kept-length step, traced by torch.compile as one graph."""
from __future__ import annotations

import contextlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from datasets.mlm import mask_tokens
from model.build import MLM_OVERFLOW, build_model, mlm_rows, unwrap
from processor.amp import backward_step, build_grad_scaler
from processor.trainer import _step_values, compile_training_model
from solver.build import build_optimizer
from tests.test_model import NUM_CLASSES, _texts, tiny_batch, tiny_cfg
from utils.config import ConfigError

TEXT_LENGTH = 16  # captions of tiny_batch's lengths (up to 11 positions) leave padding
BOOLEAN_INDEX_OPS = (torch.ops.aten.index.Tensor, torch.ops.aten.index_put.default, torch.ops.aten.index_put_.default,
                     torch.ops.aten._index_put_impl_.default)


class HostSyncs(TorchDispatchMode):
    """Records every op that makes the host wait for the device's data: reading a value (``item``, ``tolist``,
    ``_local_scalar_dense``) and ops whose output shape depends on the data (``nonzero``, ``masked_select``,
    boolean-mask indexing)."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in BOOLEAN_INDEX_OPS:  # tagged dynamic_output_shape for the boolean case only
            if any(i is not None and i.dtype == torch.bool for i in args[1]):
                self.found.append(f"{func} with a boolean index")
        elif {torch.Tag.data_dependent_output, torch.Tag.dynamic_output_shape} & set(func.tags):
            self.found.append(str(func))
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_host_syncs(monkeypatch):
    """``HostSyncs`` plus ``Tensor.tolist``, which reads the data without an op."""
    mode = HostSyncs()
    tolist = torch.Tensor.tolist

    def recorded(tensor):
        mode.found.append("Tensor.tolist")
        return tolist(tensor)

    with monkeypatch.context() as patch:
        patch.setattr(torch.Tensor, "tolist", recorded)
        with mode:
            yield mode.found


def varied_batch(cfg, seed: int) -> dict[str, torch.Tensor]:
    """tiny_batch with other caption lengths and the dataset's own MLM masking (other masked counts)."""
    batch = tiny_batch(cfg, seed)
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, cfg.text_length - 2, (4,), generator=gen).tolist()
    mask_id = cfg.backbone.vocab_size - 3
    batch["caption_ids"] = _texts(gen, cfg, lengths, 1, mask_id)
    masked = [mask_tokens(ids, mask_id=mask_id, prob=0.3, mask_ratio=0.8, random_ratio=0.1, generator=gen)
              for ids in batch["caption_ids"]]
    batch["mlm_ids"] = torch.stack([m[0] for m in masked])
    batch["mlm_labels"] = torch.stack([m[1] for m in masked])
    return batch


def training_step(model, optimizer, batch) -> dict[str, torch.Tensor]:
    """One step as processor/trainer.py runs it with fixed_shapes (values summed on the device, nothing read)."""
    outputs = model(batch)
    overflow = outputs.pop(MLM_OVERFLOW, None)
    loss = sum(v for k, v in outputs.items() if k.endswith("_loss"))
    _step_values(outputs if overflow is None else {**outputs, MLM_OVERFLOW: overflow}, loss)
    backward_step(loss, optimizer, build_grad_scaler(torch.device("cpu"), "none"))
    return outputs


@pytest.mark.parametrize("fixed", [True, False])
def test_a_whole_training_step_has_no_host_sync_with_fixed_shapes(fixed, monkeypatch):
    torch.manual_seed(0)
    cfg = tiny_cfg(text_length=TEXT_LENGTH, fixed_shapes=fixed)
    model = build_model(cfg, NUM_CLASSES).train()
    optimizer = build_optimizer(cfg, model)
    training_step(model, optimizer, varied_batch(cfg, 0))  # the first step makes Adam's state
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = varied_batch(cfg, 1)
    with count_host_syncs(monkeypatch) as found:
        training_step(model, optimizer, batch)
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())  # the step ran whole
    if fixed:
        assert found == []
    else:  # the detector works: the kept lengths and the MLM positions' boolean indexing
        assert "Tensor.tolist" in found and "aten.index.Tensor with a boolean index" in found


def _losses_and_grads(model, batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model(batch)
    sum(v for k, v in out.items() if k.endswith("_loss")).backward()
    return out, {n.removeprefix("_orig_mod."): p.grad.clone() for n, p in model.named_parameters()
                 if p.grad is not None}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fixed_shapes_give_the_kept_length_losses_and_gradients(seed):
    """float64: the two steps differ only by rounding (padding is after EOT in a causal tower, masked in SG-IHA,
    and its MLM rows carry label 0)."""
    cfg = tiny_cfg(text_length=TEXT_LENGTH, fixed_shapes=False)
    torch.manual_seed(seed)
    dynamic = build_model(cfg, NUM_CLASSES).double()
    fixed = build_model(tiny_cfg(text_length=TEXT_LENGTH, fixed_shapes=True), NUM_CLASSES).double()
    fixed.load_state_dict(dynamic.state_dict())
    batch = varied_batch(cfg, seed)
    batch["images"] = batch["images"].double()
    assert batch["caption_ids"].argmax(1).max() + 1 < TEXT_LENGTH  # the kept-length step is shorter
    expected, expected_grads = _losses_and_grads(dynamic, batch)
    got, got_grads = _losses_and_grads(fixed, batch)
    assert got.pop(MLM_OVERFLOW) == 0
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-12, atol=1e-12)
    assert got_grads.keys() == expected_grads.keys()
    for name, grad in expected_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-10, atol=1e-12)


def test_mlm_rows_bound_the_masked_positions_and_an_overflow_is_flagged():
    # by hand: 4 captions x 14 real positions, p 0.15: mean 8.4, std sqrt(56 * 0.15 * 0.85) = 2.672
    assert mlm_rows(4, TEXT_LENGTH, 8.0, 0.15) == 30  # ceil(8.4 + 21.38)
    assert mlm_rows(4, TEXT_LENGTH, 100.0, 0.15) == 56  # never more than every real position
    cfg = tiny_cfg(text_length=TEXT_LENGTH, fixed_shapes=True, **{"mlm.fixed_sigmas": 0.0})
    torch.manual_seed(0)
    model = build_model(cfg, NUM_CLASSES)
    batch = varied_batch(cfg, 0)
    rows = mlm_rows(4, TEXT_LENGTH, 0.0, cfg.mlm.prob)
    assert int((batch["mlm_labels"] != 0).sum()) > rows
    assert model(batch)[MLM_OVERFLOW] == 1
    assert build_model(tiny_cfg(text_length=TEXT_LENGTH, fixed_shapes=True), NUM_CLASSES)(batch)[MLM_OVERFLOW] == 0


def test_forward_and_losses_trace_as_one_graph():
    torch._dynamo.reset()
    torch.manual_seed(0)
    cfg = tiny_cfg(text_length=TEXT_LENGTH, fixed_shapes=True)
    model = build_model(cfg, NUM_CLASSES).train()
    explained = torch._dynamo.explain(model)(varied_batch(cfg, 0))
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    torch._dynamo.reset()


def test_an_epoch_of_varied_batches_compiles_once():
    """fullgraph=True, forward + backward over batches with other caption lengths and masked counts: one
    compilation (a counting backend: the graphs dynamo hands over, without building kernels)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    cfg = tiny_cfg(text_length=TEXT_LENGTH, fixed_shapes=True)
    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    model = build_model(cfg, NUM_CLASSES).train()
    compiled = torch.compile(model, backend=counting_backend, fullgraph=True)
    masked_counts = set()
    for seed in range(5):
        batch = varied_batch(cfg, seed)
        masked_counts.add(int((batch["mlm_labels"] != 0).sum()))
        out = compiled(batch)
        sum(v for k, v in out.items() if k.endswith("_loss")).backward()
    assert len(masked_counts) > 1 and len(graphs) == 1
    torch._dynamo.reset()


@pytest.mark.slow
def test_inductor_compiled_step_equals_eager():
    """The inductor-compiled forward and backward (fused kernels, another summation order) within float32
    rounding of eager: 1e-4 relative on losses, 1e-3 relative on the whole gradient."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    cfg = tiny_cfg(text_length=TEXT_LENGTH, fixed_shapes=True)
    model = build_model(cfg, NUM_CLASSES).train()
    batch = varied_batch(cfg, 0)
    expected, expected_grads = _losses_and_grads(model, batch)
    compiled = torch.compile(model, fullgraph=True)
    got, got_grads = _losses_and_grads(compiled, batch)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-5)
    flat = torch.cat([g.flatten() for g in expected_grads.values()])
    diff = torch.cat([(got_grads[n] - g).flatten() for n, g in expected_grads.items()])
    assert diff.norm() <= 1e-3 * flat.norm()
    torch._dynamo.reset()


def test_compile_setting_wraps_the_model_as_configured():
    torch.manual_seed(0)
    model = build_model(tiny_cfg(), NUM_CLASSES)
    cpu = torch.device("cpu")
    assert compile_training_model(model, tiny_cfg(compile=False), cpu) is model
    compiled = compile_training_model(model, tiny_cfg(compile=True), cpu)
    assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule) and unwrap(compiled) is model
    with pytest.raises(ConfigError, match="compile = 'reduce-overhead' records CUDA graphs, but the device is cpu"):
        compile_training_model(model, tiny_cfg(compile="reduce-overhead"), cpu)
    with pytest.raises(ConfigError, match="choose one of"):
        tiny_cfg(compile="max-autotune")
