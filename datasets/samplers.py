"""Training batch samplers whose global batches are the same for any number of processes.

An epoch's global batches are a function of (seed, epoch) alone. Each holds ``batch_size`` samples (the
global batch, method §7's 64) made of groups: single samples for the random sampler, K samples of one identity
for the identity sampler. Every process takes its contiguous share of the groups of every global batch, so
the union of the ranks' step-t batches is the single-process step-t batch, in rank order.

The last, partial batch is kept by default (``drop_last: false``, as the release). A last batch that is too
small for the contrastive losses (fewer than 2 samples) or for every process to get a group (fewer groups
than processes) is merged into the previous batch, with a log line.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import defaultdict
from typing import Iterator, NamedTuple, Sequence

import torch
from torch.utils.data import Sampler

from datasets.bases import DatasetError
from utils.config_rules import MIN_BATCH, split_over_processes
from utils.distributed import shard_bounds
from utils.seed import generator

logger = logging.getLogger(__name__)

ORDER_STREAM = 0  # generator(seed, epoch, ORDER_STREAM) draws an epoch's order; sample streams use other keys

Batch = list[list[int]]  # a global batch: groups of sample indices


class SampleKey(NamedTuple):
    """What the training dataset is asked for: a sample, and its position in the epoch's global order.

    The position keys the sample's random streams: a sample drawn twice in an epoch (the identity sampler
    repeats samples of identities with fewer than K) gets independent crops, masks and questions.
    """
    index: int
    position: int


class GlobalBatchSampler(Sampler[list[SampleKey]], ABC):
    """Yields this rank's share of each global batch; subclasses draw an epoch's batches (``draw_batches``)."""

    def __init__(self, batch_size: int, seed: int, drop_last: bool, world_size: int = 1, rank: int = 0):
        self.batch_size, self.seed, self.drop_last = batch_size, seed, drop_last
        self.world_size, self.rank = world_size, rank
        self.epoch = 1
        self._cache: tuple[int, list[Batch]] | None = None
        self._merge_logged = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @abstractmethod
    def draw_batches(self, g: torch.Generator) -> list[Batch]:
        """An epoch's global batches drawn with ``g`` (the last one may be partial)."""

    def global_batches(self) -> list[Batch]:
        """The current epoch's global batches, after the last-batch rule (cached: __len__ and __iter__ share them)."""
        if self._cache is None or self._cache[0] != self.epoch:
            batches = self.draw_batches(generator(self.seed, self.epoch, ORDER_STREAM))
            self._cache = (self.epoch, self._last_batch_rule(batches))
        return self._cache[1]

    def _last_batch_rule(self, batches: list[Batch]) -> list[Batch]:
        if not batches:
            return batches
        last = batches[-1]
        size = sum(len(group) for group in last)
        if size >= self.batch_size:
            return batches
        if self.drop_last:
            return batches[:-1]
        if size >= MIN_BATCH and len(last) >= self.world_size:
            return batches
        if len(batches) == 1:
            raise DatasetError(f"the training split gives one batch of {size} sample(s) in {len(last)} group(s): "
                               f"training needs at least {MIN_BATCH} samples and one group per "
                               f"process ({self.world_size})")
        if not self._merge_logged and self.rank == 0:
            logger.info("the last batch of epoch %d would hold %d sample(s) (%d group(s), %d process(es)): merged "
                        "into the previous batch", self.epoch, size, len(last), self.world_size)
            self._merge_logged = True
        return batches[:-2] + [batches[-2] + last]

    def __iter__(self) -> Iterator[list[SampleKey]]:
        """This rank's share of each global batch; positions count the samples of all ranks (the global order)."""
        position = 0
        for batch in self.global_batches():
            start, stop = shard_bounds(len(batch), self.world_size, self.rank)
            first = position + sum(len(group) for group in batch[:start])
            share = [index for group in batch[start:stop] for index in group]
            yield [SampleKey(index, first + n) for n, index in enumerate(share)]
            position += sum(len(group) for group in batch)

    def __len__(self) -> int:
        return len(self.global_batches())


class RandomBatchSampler(GlobalBatchSampler):
    """method §7's random sampler: one permutation per epoch cut into global batches of single samples."""

    def __init__(self, num_samples: int, batch_size: int, seed: int, drop_last: bool, world_size: int = 1,
                 rank: int = 0):
        super().__init__(batch_size, seed, drop_last, world_size, rank)
        if num_samples < 1:
            raise DatasetError("the training split is empty")
        self.num_samples = num_samples

    def draw_batches(self, g: torch.Generator) -> list[Batch]:
        order = [[i] for i in torch.randperm(self.num_samples, generator=g).tolist()]
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]


class IdentityBatchSampler(GlobalBatchSampler):
    """Global batches of P = batch_size / K identities with K samples each; a process takes whole K-groups.

    Identities with fewer than K samples repeat some of them; an identity's samples beyond a multiple of K wait
    for another epoch. Groups left when fewer than P identities remain form the last batches (fewer identities).
    """

    def __init__(self, pids: Sequence[int], batch_size: int, num_instance: int, seed: int, drop_last: bool,
                 world_size: int = 1, rank: int = 0):
        super().__init__(batch_size, seed, drop_last, world_size, rank)
        if num_instance < 1 or batch_size % num_instance:
            raise DatasetError(f"identity sampler: batch_size {batch_size} must be a multiple of num_instance "
                               f"{num_instance} (P identities x K instances)")
        self.ids_per_batch = batch_size // num_instance
        split_over_processes(self.ids_per_batch, world_size,
                             f"identity sampler: the {self.ids_per_batch} identities of a batch (batch_size "
                             f"{batch_size} / num_instance {num_instance}) do not divide",
                             f"choose batch_size / num_instance as a multiple of {world_size}", DatasetError)
        self.by_pid: dict[int, list[int]] = defaultdict(list)
        for index, pid in enumerate(pids):
            self.by_pid[pid].append(index)
        if len(self.by_pid) < self.ids_per_batch:
            raise DatasetError(f"identity sampler: a batch needs {self.ids_per_batch} identities (batch_size "
                               f"{batch_size} / num_instance {num_instance}) and the training split has "
                               f"{len(self.by_pid)}; lower batch_size or raise num_instance")
        self.num_instance = num_instance

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

    def draw_batches(self, g: torch.Generator) -> list[Batch]:
        groups = self._groups(g)
        batches: list[Batch] = []
        while len(groups) >= self.ids_per_batch:
            pids = sorted(groups)
            chosen = [pids[i] for i in torch.randperm(len(pids), generator=g)[:self.ids_per_batch].tolist()]
            batch = []
            for pid in chosen:
                batch.append(groups[pid].pop())
                if not groups[pid]:
                    del groups[pid]
            batches.append(batch)
        left = [group for pid in sorted(groups) for group in groups[pid]]
        left = [left[i] for i in torch.randperm(len(left), generator=g).tolist()]
        return batches + [left[i:i + self.ids_per_batch] for i in range(0, len(left), self.ids_per_batch)]


def build_batch_sampler(sampler: str, pids: Sequence[int], batch_size: int, num_instance: int, seed: int,
                        drop_last: bool, world_size: int = 1, rank: int = 0) -> GlobalBatchSampler:
    """The configured sampler (cfg.sampler) over the global batch ``batch_size``; this rank's shares."""
    if sampler == "identity":
        return IdentityBatchSampler(pids, batch_size, num_instance, seed, drop_last, world_size, rank)
    return RandomBatchSampler(len(pids), batch_size, seed, drop_last, world_size, rank)
