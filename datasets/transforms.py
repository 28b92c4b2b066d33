"""Image transforms (SPEC 3): CLIP normalisation, training augmentation from the config."""
from __future__ import annotations

from typing import TYPE_CHECKING

from utils.config import Config

if TYPE_CHECKING:
    from torchvision.transforms import Compose

# CLIP's normalisation (SPEC 3; open_clip.constants.OPENAI_DATASET_MEAN/STD, stated here so that importing the
# transforms does not import open_clip)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Evaluation resizes the whole image to img_size (no crop, aspect ratio not kept; open_clip's resize_mode
# 'squash') with this filter (a torchvision InterpolationMode value); tools/export_open_clip.py states both in the
# exported preprocessing.
RESIZE_INTERPOLATION = "bilinear"


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
