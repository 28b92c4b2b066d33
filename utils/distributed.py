"""torch.distributed helpers: set-up from torchrun's environment, shares of a split, and gathers across ranks.

A plain ``python train.py`` is a world of one: nothing here then talks to other processes.
"""
from __future__ import annotations

import os
import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn


def env_world_size() -> int:
    """The number of processes torchrun started (1 for a plain ``python`` run)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """Join the process group when launched by torchrun; returns (world_size, rank, this process's device).

    NCCL on GPUs, gloo on CPU.
    """
    world_size = env_world_size()
    if world_size == 1:
        return 1, 0, device
    rank = int(os.environ["RANK"])
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return world_size, rank, device


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_bounds(count: int, world_size: int, rank: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous share of ``count`` items; shares differ by at most one item."""
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def all_sizes(local: int, device: torch.device) -> list[int]:
    """Every rank's ``local`` count, in rank order."""
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([local], dtype=torch.long, device=device))
    return [int(s) for s in sizes]


def all_sum(value: int, device: torch.device) -> int:
    """The sum of an integer over all ranks."""
    total = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(total)
    return int(total)


def all_sum_tensor(value: torch.Tensor) -> torch.Tensor:
    """The sum of a tensor over all ranks, left on the device (no host synchronisation)."""
    total = value.clone()
    dist.all_reduce(total)
    return total


def gather_rows(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """All ranks' rows of ``x`` ([sizes[rank], ...] here) concatenated in rank order.

    Floating tensors keep their gradient: the backward pass sums every rank's gradient of its rows back to
    this rank (torch.distributed.nn's all_gather), as open_clip's gather_with_grad. Rank shares may differ in
    size: rows are padded to the largest share for the collective and cut out again.
    """
    longest = max(sizes)
    if x.shape[0] < longest:
        x = torch.cat([x, x.new_zeros(longest - x.shape[0], *x.shape[1:])])
    if x.is_floating_point() and x.requires_grad:
        with warnings.catch_warnings():  # deprecated in favour of a private module; the autograd gather we want
            warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)
            parts = dist_nn.all_gather(x)
    else:
        parts = [torch.empty_like(x) for _ in sizes]
        dist.all_gather(parts, x.contiguous())
    return torch.cat([part[:n] for part, n in zip(parts, sizes)])


def average_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over all processes (``values`` itself in a single process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / dist.get_world_size()
