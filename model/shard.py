"""A training batch spread over processes, as the losses see it: gathers with gradient and global means.

With N processes each holds its share of the global batch (datasets/samplers.py). A contrastive loss
compares this process's rows with the gathered columns of every process; a mean is taken over the global
batch: ``sum(local values) * N / global count``. DistributedDataParallel then averages the N gradients, so
every parameter gets exactly the gradient of the single-process loss on the global batch. In a single
process (``LOCAL``) nothing is gathered and a mean is a plain mean.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from utils.distributed import all_sizes, all_sum, all_sum_tensor, gather_rows


@dataclass(frozen=True)
class BatchShard:
    """This process's rows of the global batch: ``sizes`` holds every process's row count, in rank order."""

    sizes: tuple[int, ...] = ()
    rank: int = 0

    @property
    def world_size(self) -> int:
        return max(1, len(self.sizes))

    @property
    def offset(self) -> int:
        """Global index of this process's first row."""
        return sum(self.sizes[:self.rank])

    @classmethod
    def of(cls, local_rows: int, device: torch.device, world_size: int, rank: int) -> "BatchShard":
        """The shard of a batch of ``local_rows`` here (asks every process for its count when distributed)."""
        if world_size == 1:
            return LOCAL
        return cls(tuple(all_sizes(local_rows, device)), rank)

    def gather(self, x: Tensor) -> Tensor:
        """Every process's rows of ``x`` in rank order (differentiable); ``x`` itself in a single process."""
        return x if self.world_size == 1 else gather_rows(x, list(self.sizes))

    def mean(self, values: Tensor, global_count: int | None = None) -> Tensor:
        """The share of the global mean this process contributes, scaled so that averaging over processes
        gives the mean over the global batch. ``global_count``: the number of values over all processes
        (default: the global batch's rows)."""
        if self.world_size == 1:
            return values.mean()
        count = sum(self.sizes) if global_count is None else global_count
        return values.sum() * (self.world_size / count)

    def count(self, local: int, device: torch.device) -> int:
        """``local`` summed over processes (e.g. masked MLM positions)."""
        return local if self.world_size == 1 else all_sum(local, device)

    def total(self, local: Tensor) -> Tensor:
        """``local`` (a count on the device) summed over processes, without a host synchronisation."""
        return local if self.world_size == 1 else all_sum_tensor(local)


LOCAL = BatchShard()
