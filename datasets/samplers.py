"""Training samplers: random (per-rank shards when distributed) and identity (P ids x K instances)."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import torch
from torch.utils.data import DistributedSampler, RandomSampler, Sampler


class IdentitySampler(Sampler[int]):
    """Batches of P = batch_size / K identities with K samples each; whole batches are dealt to ranks.

    Identities with fewer than K samples repeat some of them. Each ``__iter__`` reshuffles (seed + epoch);
    ``set_epoch`` pins the epoch like ``DistributedSampler``.
    """

    def __init__(self, pids: Sequence[int], batch_size: int, num_instance: int, seed: int,
                 world_size: int = 1, rank: int = 0) -> None:
        if batch_size % num_instance:
            raise ValueError(f"batch_size {batch_size} must be a multiple of num_instance {num_instance}")
        self.by_pid: dict[int, list[int]] = defaultdict(list)
        for index, pid in enumerate(pids):
            self.by_pid[pid].append(index)
        self.ids_per_batch = batch_size // num_instance
        if len(self.by_pid) < self.ids_per_batch:
            raise ValueError(f"identity sampler needs {self.ids_per_batch} identities per batch, "
                             f"the training set has {len(self.by_pid)}")
        self.batch_size, self.num_instance = batch_size, num_instance
        self.seed, self.world_size, self.rank = seed, world_size, rank
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _groups(self, g: torch.Generator) -> dict[int, list[list[int]]]:
        """Each identity's shuffled samples cut into groups of K."""
        k = self.num_instance
        groups = {}
        for pid, indices in self.by_pid.items():
            order = [indices[i] for i in torch.randperm(len(indices), generator=g).tolist()]
            if len(order) < k:
                order += [indices[i] for i in torch.randint(len(indices), (k - len(order),), generator=g).tolist()]
            groups[pid] = [order[i:i + k] for i in range(0, len(order) - k + 1, k)]
        return groups

    def _batches(self) -> list[list[int]]:
        """This rank's batches of the current epoch (cached: ``__len__`` and ``__iter__`` share them)."""
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, self._make_batches())
        return self._cache[1]

    def _make_batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        groups = self._groups(g)
        batches = []
        while len(groups) >= self.ids_per_batch:
            pids = sorted(groups)
            chosen = [pids[i] for i in torch.randperm(len(pids), generator=g)[:self.ids_per_batch].tolist()]
            batch = []
            for pid in chosen:
                batch += groups[pid].pop()
                if not groups[pid]:
                    del groups[pid]
            batches.append(batch)
        usable = len(batches) - len(batches) % self.world_size  # every rank gets the same number of batches
        return batches[self.rank:usable:self.world_size]

    def __iter__(self) -> Iterator[int]:
        batches = self._batches()
        self.epoch += 1
        return iter([i for batch in batches for i in batch])

    def __len__(self) -> int:
        return len(self._batches()) * self.batch_size


def build_train_sampler(sampler: str, pids: Sequence[int], batch_size: int, num_instance: int, seed: int,
                        generator: torch.Generator, world_size: int = 1, rank: int = 0) -> Sampler[int]:
    """The configured sampler (cfg.sampler); ``generator`` drives the single-process random sampler."""
    if sampler == "identity":
        return IdentitySampler(pids, batch_size, num_instance, seed, world_size, rank)
    if world_size > 1:
        return DistributedSampler(range(len(pids)), num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                  drop_last=True)
    return RandomSampler(range(len(pids)), generator=generator)
