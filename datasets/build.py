"""Data loaders of a run: the training loader and one evaluation set per configured split.

Batch sizes in the config are global (``batch_size``, ``test_batch_size``): with N processes each loader
holds 1/N of them (utils.config_rules.per_process).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch.utils.data import DataLoader, Subset

from datasets.bases import BenchmarkData, DataRecord, EvalSplit
from datasets.eval_dataset import ImageDataset, TextDataset
from datasets.reader import read_benchmark
from datasets.samplers import GlobalBatchSampler, build_batch_sampler
from datasets.train_dataset import TrainDataset
from datasets.transforms import build_transform
from utils.config import Config
from utils.config_rules import per_process
from utils.distributed import shard_bounds
from utils.tokenizer import Tokenizer, get_tokenizer


@dataclass
class EvalSet:
    """Gallery and query loaders of one split (this process's contiguous share), with every item's pid."""

    name: str
    image_loader: DataLoader  # yields (pids LongTensor[B], images FloatTensor[B, 3, H, W])
    text_loader: DataLoader  # yields (pids LongTensor[B], caption_ids LongTensor[B, L])
    g_pids: torch.LongTensor  # the whole split's, in order
    q_pids: torch.LongTensor
    img_paths: list[str]
    captions: list[str]
    world_size: int = 1  # processes sharing the split; their shares are gathered in rank order
    source: DataRecord | None = None  # the annotation the split was read from (run_info.json)


@dataclass
class DataBundle:
    train_loader: DataLoader
    num_classes: int
    eval_sets: dict[str, EvalSet]
    batch_sampler: GlobalBatchSampler
    train_set: TrainDataset
    source: DataRecord  # the annotation read and its split sizes (run_info.json)

    def set_epoch(self, epoch: int) -> None:
        """Make the epoch's batches and every sample's randomness a function of (seed, epoch) alone.

        A run resumed after epoch e then sees exactly the batches of epoch e + 1 of an uninterrupted run.
        """
        self.train_set.set_epoch(epoch)
        self.batch_sampler.set_epoch(epoch)


def _loader_generator() -> torch.Generator:
    """A private generator for a loader's worker seeds, so that no loader draws from the global RNG."""
    return torch.Generator().manual_seed(0)


def _eval_loader(dataset, cfg: Config, world_size: int, rank: int) -> DataLoader:
    start, stop = shard_bounds(len(dataset), world_size, rank)
    return DataLoader(Subset(dataset, range(start, stop)), batch_size=per_process(cfg.test_batch_size, world_size,
                                                                                 "test_batch_size"),
                      shuffle=False, num_workers=cfg.num_workers, pin_memory=torch.cuda.is_available(),
                      generator=_loader_generator())


def build_eval_set(name: str, split: EvalSplit, cfg: Config, tokenizer: Tokenizer, world_size: int = 1,
                   rank: int = 0, source: DataRecord | None = None) -> EvalSet:
    """Loaders over this process's share of one split's gallery images and query captions (eval transform)."""
    images = ImageDataset(split.image_pids, split.img_paths, build_transform(cfg, train=False))
    texts = TextDataset(split.caption_pids, split.captions, tokenizer, cfg.text_length)
    return EvalSet(name, _eval_loader(images, cfg, world_size, rank), _eval_loader(texts, cfg, world_size, rank),
                   torch.tensor(split.image_pids, dtype=torch.long), torch.tensor(split.caption_pids, dtype=torch.long),
                   list(split.img_paths), list(split.captions), world_size, source)


def _eval_sets(data: BenchmarkData, cfg: Config, tokenizer: Tokenizer, splits: Sequence[str], world_size: int,
               rank: int) -> dict[str, EvalSet]:
    return {name: build_eval_set(name, data.eval_splits[name], cfg, tokenizer, world_size, rank, data.source)
            for name in splits}


def read_dataset(cfg: Config, splits: Sequence[str], need_phrases: bool = False,
                 cache_phrases: bool = True) -> BenchmarkData:
    """The configured dataset, checked to have ``splits`` (cfg.dataset_name, root_dir, annotation_file)."""
    return read_benchmark(cfg.dataset_name, cfg.root_dir, need_phrases=need_phrases,
                          phrase_backend=cfg.phrase_backend, annotation_file=cfg.annotation_file,
                          required_splits=splits, cache_phrases=cache_phrases)


def build_eval_sets(cfg: Config, splits: Sequence[str] | None = None, world_size: int = 1,
                    rank: int = 0) -> dict[str, EvalSet]:
    """Evaluation sets only (test.py, tools): ``splits`` defaults to cfg.eval_splits."""
    splits = cfg.eval_splits if splits is None else splits
    return _eval_sets(read_dataset(cfg, splits), cfg, get_tokenizer(), splits, world_size, rank)


def build_dataloaders(cfg: Config, world_size: int = 1, rank: int = 0) -> DataBundle:
    """Read the dataset and build the loaders (this process's share of every global batch and split)."""
    required = list(dict.fromkeys([*cfg.eval_splits, cfg.select_on]))
    data = read_dataset(cfg, required, need_phrases="aqa" in cfg.losses, cache_phrases=rank == 0)
    tokenizer = get_tokenizer()
    train_set = TrainDataset(data.train, build_transform(cfg, train=True), tokenizer, cfg, cfg.seed)
    batch_sampler = build_batch_sampler(cfg.sampler, [s.pid for s in data.train], cfg.batch_size, cfg.num_instance,
                                        cfg.seed, cfg.drop_last, world_size, rank)
    # Workers are not persistent: each epoch starts them anew with the dataset's epoch set (DataBundle.set_epoch).
    train_loader = DataLoader(train_set, batch_sampler=batch_sampler, num_workers=cfg.num_workers,
                              pin_memory=torch.cuda.is_available(), generator=_loader_generator())
    return DataBundle(train_loader, data.num_classes, _eval_sets(data, cfg, tokenizer, cfg.eval_splits, world_size,
                                                                 rank), batch_sampler, train_set, data.source)
