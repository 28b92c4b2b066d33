"""fixed_shapes with two processes: the model's losses and gradients equal one process's on the global batch (the
MLM mean over the global batch's masked positions, counted on the device)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from model.build import MLM_OVERFLOW, build_model
from tests.test_distributed import _free_port, _join_group
from tests.test_fixed_shapes import TEXT_LENGTH, varied_batch
from tests.test_model import NUM_CLASSES, tiny_cfg

SHARES = (range(0, 3), range(3, 4))  # a global batch of 4: 3 rows here, 1 there


def _model_and_batch(world_size: int, rank: int):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(text_length=TEXT_LENGTH, fixed_shapes=True), NUM_CLASSES, world_size, rank)
    batch = varied_batch(tiny_cfg(text_length=TEXT_LENGTH), 3)
    return model.double(), {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}


def _losses_and_grads(model, batch):
    out = model(batch)
    out.pop(MLM_OVERFLOW)
    sum(v for k, v in out.items() if k.endswith("_loss")).backward()
    return {k: v.detach() for k, v in out.items()}, {n: p.grad for n, p in model.named_parameters()
                                                      if p.grad is not None}


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    _join_group(rank, world_size, port)
    dist.init_process_group("gloo")
    model, batch = _model_and_batch(world_size, rank)
    local = {k: v[list(SHARES[rank])] for k, v in batch.items()}
    torch.save(_losses_and_grads(model, local), Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_give_the_single_process_losses_and_gradients(tmp_path: Path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    model, batch = _model_and_batch(1, 0)
    expected, expected_grads = _losses_and_grads(model, batch)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert int((batch["mlm_labels"][:3] != 0).sum()) != int((batch["mlm_labels"][3:] != 0).sum())
    for key, value in expected.items():  # each process's value is its share: their mean is the global value
        torch.testing.assert_close(sum(r[0][key] for r in ranks) / 2, value, rtol=1e-12, atol=1e-12, msg=key)
    for name, grad in expected_grads.items():  # DistributedDataParallel averages the processes' gradients
        torch.testing.assert_close(sum(r[1][name] for r in ranks) / 2, grad, rtol=1e-10, atol=1e-12, msg=name)
