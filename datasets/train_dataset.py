"""The training dataset: one caption with its image, plus the MLM and AQA inputs the losses need."""
from __future__ import annotations

import random
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, get_worker_info

from datasets.aqa import make_aqa_sample
from datasets.bases import DatasetError, TrainSample
from datasets.mlm import mask_tokens
from utils.config import Config
from utils.tokenizer import Tokenizer

SEED_BITS = 63  # torch generators take seeds below 2**63


def load_image(path: str) -> Image.Image:
    """An RGB image, or an error naming the file."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the image ({exc})") from exc


class TrainDataset(Dataset):
    """Items: images, caption_ids, pids, image_ids; mlm_ids/mlm_labels with 'mlm'; question_ids,
    question_mask, answer_ids with 'aqa' (SPEC 5, 6.1).

    MLM masks and AQA choices come from generators owned by the dataset: seeded from ``seed`` here and
    re-seeded per worker by ``seed_worker``, so equal seeds give equal batches with any worker count.
    """

    def __init__(self, samples: Sequence[TrainSample], transform: Callable, tokenizer: Tokenizer, cfg: Config,
                 seed: int):
        self.samples = list(samples)
        self.transform = transform
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.use_mlm = "mlm" in cfg.losses
        self.use_aqa = "aqa" in cfg.losses
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the masking (torch) and question-choice (python) generators from ``seed``."""
        self.rng = random.Random(seed)
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.samples[index]
        cfg = self.cfg
        caption_ids = self.tokenizer(s.caption, cfg.text_length)
        item = {
            "images": self.transform(load_image(s.img_path)),
            "caption_ids": caption_ids,
            "pids": torch.tensor(s.pid, dtype=torch.long),
            "image_ids": torch.tensor(s.image_id, dtype=torch.long),
        }
        if self.use_mlm:
            item["mlm_ids"], item["mlm_labels"] = mask_tokens(
                caption_ids, mask_id=self.tokenizer.mask_id, prob=cfg.mlm.prob, mask_ratio=cfg.mlm.mask_ratio,
                random_ratio=cfg.mlm.random_ratio, generator=self.generator)
        if self.use_aqa:
            aqa = make_aqa_sample(
                s.caption, s.phrases, self.tokenizer, self.rng, context_length=cfg.text_length,
                answer_prefix_masks=cfg.sgiha.answer_prefix_masks, min_word_len=cfg.sgiha.min_word_len,
                fallback_min_len=cfg.sgiha.fallback_min_len)
            item.update(question_ids=aqa.question_ids, question_mask=aqa.question_mask, answer_ids=aqa.answer_ids)
        return item


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: derive every generator of the worker from its loader-given seed."""
    info = get_worker_info()
    seed = info.seed % (2 ** SEED_BITS)
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    if hasattr(info.dataset, "reseed"):
        info.dataset.reseed(seed)
