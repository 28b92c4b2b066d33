"""Data loaders of a run: the training loader and one evaluation set per configured split."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from datasets.bases import BenchmarkData, EvalSplit, read_benchmark
from datasets.eval_dataset import ImageDataset, TextDataset
from datasets.samplers import build_train_sampler
from datasets.train_dataset import TrainDataset, seed_worker
from datasets.transforms import build_transform
from utils.config import Config
from utils.tokenizer import Tokenizer, get_tokenizer

logger = logging.getLogger(__name__)


@dataclass
class EvalSet:
    """Gallery and query loaders of one split, with the pids in loader order."""

    name: str
    image_loader: DataLoader  # yields (pids LongTensor[B], images FloatTensor[B, 3, H, W])
    text_loader: DataLoader  # yields (pids LongTensor[B], caption_ids LongTensor[B, L])
    g_pids: torch.LongTensor
    q_pids: torch.LongTensor
    img_paths: list[str]
    captions: list[str]


@dataclass
class DataBundle:
    train_loader: DataLoader
    num_classes: int
    eval_sets: dict[str, EvalSet]
    train_sampler: Sampler
    train_set: TrainDataset
    generator: torch.Generator  # the training loader's: random order and worker seeds
    seed: int
    rank: int

    def set_epoch(self, epoch: int) -> None:
        """Make the epoch's order and sample randomness a function of (seed, rank, epoch) alone.

        A run resumed after epoch e then sees exactly the batches of epoch e + 1 of an uninterrupted run.
        """
        epoch_seed = int(np.random.SeedSequence([self.seed, self.rank, epoch]).generate_state(1, np.uint64)[0] >> 1)
        self.generator.manual_seed(epoch_seed)
        self.train_set.reseed(epoch_seed)
        if hasattr(self.train_sampler, "set_epoch"):
            self.train_sampler.set_epoch(epoch)


def _eval_loader(dataset, cfg: Config) -> DataLoader:
    return DataLoader(dataset, batch_size=cfg.test_batch_size, shuffle=False, num_workers=cfg.num_workers,
                      pin_memory=torch.cuda.is_available())


def build_eval_set(name: str, split: EvalSplit, cfg: Config, tokenizer: Tokenizer) -> EvalSet:
    """Loaders over one split's gallery images and query captions (eval transform, no shuffling)."""
    images = ImageDataset(split.image_pids, split.img_paths, build_transform(cfg, train=False))
    texts = TextDataset(split.caption_pids, split.captions, tokenizer, cfg.text_length)
    return EvalSet(name, _eval_loader(images, cfg), _eval_loader(texts, cfg),
                   torch.tensor(split.image_pids, dtype=torch.long), torch.tensor(split.caption_pids, dtype=torch.long),
                   list(split.img_paths), list(split.captions))


def _eval_sets(data: BenchmarkData, cfg: Config, tokenizer: Tokenizer, splits: Sequence[str]) -> dict[str, EvalSet]:
    """One EvalSet per split of ``splits`` that the benchmark has (others: a warning)."""
    sets = {}
    for name in splits:
        if name not in data.eval_splits:
            logger.warning("%s has no %r split; skipping its evaluation", data.name, name)
            continue
        sets[name] = build_eval_set(name, data.eval_splits[name], cfg, tokenizer)
    return sets


def build_eval_sets(cfg: Config, splits: Sequence[str] | None = None) -> dict[str, EvalSet]:
    """Evaluation sets only (test.py, tools): ``splits`` defaults to cfg.eval_splits."""
    data = read_benchmark(cfg.dataset_name, cfg.root_dir)
    return _eval_sets(data, cfg, get_tokenizer(), cfg.eval_splits if splits is None else splits)


def build_dataloaders(cfg: Config, world_size: int = 1, rank: int = 0) -> DataBundle:
    """Read cfg.dataset_name under cfg.root_dir and build the loaders (this rank's training shard)."""
    data = read_benchmark(cfg.dataset_name, cfg.root_dir, need_phrases="aqa" in cfg.losses,
                          phrase_backend=cfg.phrase_backend)
    tokenizer = get_tokenizer()
    # Ranks share the shuffling seed (the sampler splits one permutation) but not the sample randomness.
    rank_seed = cfg.seed + rank
    train_set = TrainDataset(data.train, build_transform(cfg, train=True), tokenizer, cfg, rank_seed)
    generator = torch.Generator().manual_seed(rank_seed)
    sampler = build_train_sampler(cfg.sampler, [s.pid for s in data.train], cfg.batch_size, cfg.num_instance,
                                  cfg.seed, generator, world_size, rank)
    # Workers are not persistent: each epoch starts them anew from the re-seeded generator (DataBundle.set_epoch),
    # which is what makes a resumed run repeat an uninterrupted one exactly.
    train_loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                              pin_memory=torch.cuda.is_available(),
                              drop_last=True, generator=generator, worker_init_fn=seed_worker)
    return DataBundle(train_loader, data.num_classes, _eval_sets(data, cfg, tokenizer, cfg.eval_splits), sampler,
                      train_set, generator, cfg.seed, rank)
