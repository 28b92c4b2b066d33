"""Images as the model sees them (method §3): reading a file, CLIP's normalisation and the evaluation resize.

Training data, evaluation, the doctor, the encoder API, the tools and the open_clip export all read these from here.
"""
from __future__ import annotations

from PIL import Image

from utils.errors import UserError

# CLIP's normalisation (method §3; open_clip.constants.OPENAI_DATASET_MEAN/STD, stated here so that importing the
# transforms does not import open_clip)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Evaluation resizes the whole image to img_size (no crop, aspect ratio not kept; open_clip's resize_mode
# 'squash') with this filter (a torchvision InterpolationMode value); tools/export_open_clip.py states both in the
# exported preprocessing.
RESIZE_INTERPOLATION = "bilinear"


class ImageError(UserError, ValueError):
    """An image file that is missing or does not decode."""


def load_image(path: str) -> Image.Image:
    """An RGB image, or an error naming the file (also for a file that exists but does not decode)."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{path}: cannot read the image ({exc})") from exc
