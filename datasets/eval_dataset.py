"""Evaluation datasets: gallery images and query captions, each with its identity."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

from utils.images import load_image
from utils.tokenizer import Tokenizer


class ImageDataset(Dataset):
    """Items (pid, image tensor)."""

    def __init__(self, pids: Sequence[int], img_paths: Sequence[str], transform: Callable):
        self.pids, self.img_paths, self.transform = list(pids), list(img_paths), transform

    def __len__(self) -> int:
        return len(self.img_paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        return self.pids[index], self.transform(load_image(self.img_paths[index]))


class TextDataset(Dataset):
    """Items (pid, caption ids [context_length])."""

    def __init__(self, pids: Sequence[int], captions: Sequence[str], tokenizer: Tokenizer, context_length: int):
        self.pids, self.captions = list(pids), list(captions)
        self.tokenizer, self.context_length = tokenizer, context_length

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        return self.pids[index], self.tokenizer(self.captions[index], self.context_length)
