"""Image transforms (method §3): CLIP normalisation, training augmentation from the config."""
from __future__ import annotations

from typing import TYPE_CHECKING

from utils.config import Config
from utils.images import CLIP_MEAN, CLIP_STD, RESIZE_INTERPOLATION

if TYPE_CHECKING:
    from torchvision.transforms import Compose


def build_transform(cfg: Config, train: bool) -> Compose:
    """Resize to cfg.img_size and normalise; at training time with cfg.img_aug, flip, pad+crop and erase."""
    from torchvision import transforms as T  # here, not at import: importing torchvision takes seconds

    size = tuple(cfg.img_size)
    resize = T.Resize(size, interpolation=T.InterpolationMode(RESIZE_INTERPOLATION))
    normalize = T.Normalize(mean=CLIP_MEAN, std=CLIP_STD)
    if not (train and cfg.img_aug):
        return T.Compose([resize, T.ToTensor(), normalize])
    return T.Compose([
        resize,
        T.RandomHorizontalFlip(p=cfg.img_flip_prob),
        T.Pad(cfg.img_pad),
        T.RandomCrop(size),
        T.ToTensor(),
        normalize,
        T.RandomErasing(scale=tuple(cfg.img_erase_scale), value=CLIP_MEAN),
    ])
