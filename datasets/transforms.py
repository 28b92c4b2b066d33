"""Image transforms (SPEC 3): CLIP normalisation, training augmentation from the config."""
from __future__ import annotations

from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torchvision import transforms as T

from utils.config import Config

# Evaluation resizes the whole image to img_size (no crop, aspect ratio not kept; open_clip's resize_mode
# 'squash') with this filter; tools/export_open_clip.py states both in the exported preprocessing.
RESIZE_INTERPOLATION = T.InterpolationMode.BILINEAR


def build_transform(cfg: Config, train: bool) -> T.Compose:
    """Resize to cfg.img_size and normalise; at training time with cfg.img_aug, flip, pad+crop and erase."""
    size = tuple(cfg.img_size)
    normalize = T.Normalize(mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)
    if not (train and cfg.img_aug):
        return T.Compose([T.Resize(size, interpolation=RESIZE_INTERPOLATION), T.ToTensor(), normalize])
    return T.Compose([
        T.Resize(size, interpolation=RESIZE_INTERPOLATION),
        T.RandomHorizontalFlip(p=cfg.img_flip_prob),
        T.Pad(cfg.img_pad),
        T.RandomCrop(size),
        T.ToTensor(),
        normalize,
        T.RandomErasing(scale=tuple(cfg.img_erase_scale), value=OPENAI_DATASET_MEAN),
    ])
