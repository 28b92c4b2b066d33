"""The training dataset: one caption with its image, plus the MLM and AQA inputs the losses need."""
from __future__ import annotations

import random
from typing import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from datasets.aqa import make_aqa_sample
from datasets.bases import TrainSample
from datasets.mlm import mask_tokens
from datasets.samplers import SampleKey
from utils.config import Config
from utils.images import load_image
from utils.seed import derive_seed, generator
from utils.tokenizer import Tokenizer

# Per-sample random streams: derive_seed(seed, epoch, stream, position); ORDER_STREAM 0 is the sampler's.
AUGMENT_STREAM, MLM_STREAM, AQA_STREAM = 1, 2, 3


class TrainDataset(Dataset):
    """Items: images, caption_ids, pids, image_ids; mlm_ids/mlm_labels with 'mlm'; question_ids,
    question_mask, answer_ids with 'aqa' (method §5, 6.1).

    Items are asked for by ``SampleKey`` (index, position in the epoch's global order). Every random choice for a
    sample (augmentation, MLM mask, AQA phrase and occurrence) comes from generators seeded by (seed, epoch,
    stream, position): a sample is the same tensor whatever the process, the number of processes or of loader
    workers, and a sample drawn twice in an epoch draws its randomness twice.
    """

    def __init__(self, samples: Sequence[TrainSample], transform: Callable, tokenizer: Tokenizer, cfg: Config,
                 seed: int):
        self.samples = list(samples)
        self.transform = transform
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.seed = seed
        self.epoch = 1
        self.use_mlm = "mlm" in cfg.losses
        self.use_aqa = "aqa" in cfg.losses

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def _augment(self, image: Image.Image, seed: int) -> torch.Tensor:
        """The transform with the CPU generator seeded for this sample (torchvision draws from the global one)."""
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            return self.transform(image)

    def __getitem__(self, key: SampleKey) -> dict[str, torch.Tensor]:
        s = self.samples[key.index]
        cfg = self.cfg
        keys = (self.seed, self.epoch)
        caption_ids = self.tokenizer(s.caption, cfg.text_length)
        item = {
            "images": self._augment(load_image(s.img_path), derive_seed(*keys, AUGMENT_STREAM, key.position)),
            "caption_ids": caption_ids,
            "pids": torch.tensor(s.pid, dtype=torch.long),
            "image_ids": torch.tensor(s.image_id, dtype=torch.long),
        }
        if self.use_mlm:
            item["mlm_ids"], item["mlm_labels"] = mask_tokens(
                caption_ids, mask_id=self.tokenizer.mask_id, prob=cfg.mlm.prob, mask_ratio=cfg.mlm.mask_ratio,
                random_ratio=cfg.mlm.random_ratio,
                generator=generator(*keys, MLM_STREAM, key.position))
        if self.use_aqa:
            aqa = make_aqa_sample(
                s.caption, s.phrases, self.tokenizer, random.Random(derive_seed(*keys, AQA_STREAM, key.position)),
                context_length=cfg.text_length, answer_prefix_masks=cfg.sgiha.answer_prefix_masks,
                min_word_len=cfg.sgiha.min_word_len, fallback_min_len=cfg.sgiha.fallback_min_len)
            item.update(question_ids=aqa.question_ids, question_mask=aqa.question_mask, answer_ids=aqa.answer_ids)
        return item
