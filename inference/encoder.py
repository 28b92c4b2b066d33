"""Use a trained model from Python: load it, then turn captions and images into retrieval features.

    from inference.encoder import load_encoder

    encoder = load_encoder("logs/CUHK-PEDES/<run>")          # a run folder (configs.yaml + best.pth); also a
                                                              # checkpoint file (the config stored in it) or a
                                                              # folder written by tools/export_open_clip.py
    text = encoder.encode_text("a woman in a red coat")       # [1, D]
    images = encoder.encode_images(["a.jpg", pil_image])      # [2, D]: file paths and/or PIL images
    scores = text @ images.T                                  # cosine similarities, [1, 2]

The model is the retrieval model alone (the CLIP backbone, method §6.5). Captions go through the project's
tokenizer (truncated to ``text_length`` tokens, with a warning), images through the evaluation transform; both
are encoded in batches of ``test_batch_size`` under ``torch.no_grad`` on the chosen device, by the evaluator's
function (model/encode.py) and in its precision: the config's ``amp`` (``auto``: none on CPU, bf16 or fp16 on a GPU)
unless ``load_encoder(..., amp="none")`` asks for another. Features come back L2-normalised, float32, on the CPU,
one row per input (a single string or image gives one row).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datasets.transforms import build_transform
from model.build import load_retrieval_model, read_checkpoint, retrieval_model
from model.clip import CLIP
from model.encode import encode_loader
from model.open_clip_format import LOCAL_DIR_CONFIG, WEIGHTS_FILE, is_export_dir, read_export
from utils.checkpoint import CheckpointError
from utils.config import CHOICES, Config, ConfigError, load_config
from utils.errors import UserError
from utils.images import load_image
from utils.precision import resolve_amp, resolve_device
from utils.runs import BEST_CHECKPOINT, CONFIG_FILE, default_checkpoint, run_config
from utils.tokenizer import get_tokenizer

logger = logging.getLogger(__name__)

ImageInput = Union[str, os.PathLike, Image.Image]
IMAGE_TYPES = (str, os.PathLike, Image.Image)  # a file path or a PIL image
TRUNCATED_LISTED = 5  # truncated captions named in one warning


class EncoderInputError(UserError, ValueError):
    """A path that is no model to load, or inputs that are not captions or images."""


def _stored_config(state: dict[str, Any], path: Path) -> Config:
    """The resolved config a training checkpoint carries, checked against this version's keys."""
    if not isinstance(state.get("config"), dict):
        raise CheckpointError(f"{path}: holds no 'config'; load its run folder (with {CONFIG_FILE}) instead")
    try:
        return load_config(None, state["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its stored config does not fit this version's keys ({exc})") from exc


class _Inputs(Dataset):
    """Items (index, prepared input) for the evaluator's encode loop."""

    def __init__(self, items: Sequence[Any], prepare: Callable[[Any], Tensor]):
        self.items, self.prepare = items, prepare

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, Tensor]:
        return index, self.prepare(self.items[index])


def _rgb(image: ImageInput) -> Image.Image:
    """A PIL image in RGB; a missing or unreadable file is an ImageError naming it."""
    return image.convert("RGB") if isinstance(image, Image.Image) else load_image(os.fspath(image))


def _as_list(inputs: Any, single: tuple[type, ...], what: str) -> list[Any]:
    """``inputs`` as a list (one item when it is a single input), each item of a ``single`` type."""
    items = list(inputs) if isinstance(inputs, Iterable) and not isinstance(inputs, single) else [inputs]
    bad = [type(item).__name__ for item in items if not isinstance(item, single)]
    if bad:
        raise EncoderInputError(f"{what}: expected {' or '.join(t.__name__ for t in single)}, got {bad[0]}")
    return items


class Encoder:
    """A retrieval model with the tokenizer and evaluation transform of its config; ``amp``: a resolved autocast
    mode ('fp16' | 'bf16' | 'none')."""

    def __init__(self, model: CLIP, cfg: Config, device: torch.device, batch_size: int, amp: str):
        self.model, self.cfg, self.device, self.batch_size, self.amp = model, cfg, device, batch_size, amp
        self.tokenizer = get_tokenizer()
        self.transform = build_transform(cfg, train=False)

    @property
    def embed_dim(self) -> int:
        return self.cfg.backbone.embed_dim

    def _encode(self, encode: Callable[[Tensor], Tensor], items: Sequence[Any],
                prepare: Callable[[Any], Tensor], desc: str) -> Tensor:
        """[N, D] unit-norm float32 features on the CPU, ``batch_size`` inputs per forward pass."""
        if not items:
            return torch.empty(0, self.embed_dim)
        loader = DataLoader(_Inputs(items, prepare), batch_size=self.batch_size, shuffle=False)
        # a progress bar only for inputs that take several forward passes
        features, _ = encode_loader(encode, loader, self.device, self.amp, desc,
                                    show_progress=len(items) > self.batch_size)
        return features.cpu()

    def _warn_truncated(self, captions: Sequence[str]) -> None:
        limit = self.cfg.text_length
        lengths = [(i, self.tokenizer.sequence_length(c)) for i, c in enumerate(captions)]
        long = [(i, n) for i, n in lengths if n > limit]
        if long:
            listed = ", ".join(f"#{i} ({n} tokens)" for i, n in long[:TRUNCATED_LISTED])
            logger.warning("%d caption(s) exceed text_length %d tokens (SOT and EOT included) and are truncated: "
                           "%s%s", len(long), limit, listed, ", ..." if len(long) > TRUNCATED_LISTED else "")

    def encode_text(self, captions: str | Sequence[str]) -> Tensor:
        """Features [N, D] of one caption or a list of captions."""
        captions = _as_list(captions, (str,), "captions")
        self._warn_truncated(captions)
        return self._encode(self.model.encode_text, captions,
                            lambda caption: self.tokenizer(caption, self.cfg.text_length), "captions")

    def encode_images(self, images: ImageInput | Sequence[ImageInput]) -> Tensor:
        """Features [N, D] of one image or a list of images (file paths and/or PIL images)."""
        images = _as_list(images, IMAGE_TYPES, "images")
        return self._encode(self.model.encode_image, images, lambda image: self.transform(_rgb(image)), "images")


def load_encoder(path: str | os.PathLike, device: str | torch.device = "auto", batch_size: int | None = None,
                 amp: str | None = None) -> Encoder:
    """An Encoder from a run folder, a training checkpoint, or an export folder of tools/export_open_clip.py.

    ``device``: 'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:N' or a torch.device.
    ``batch_size``: inputs per forward pass (default: the config's ``test_batch_size``).
    ``amp``: 'auto', 'fp16', 'bf16' or 'none' (default: the config's ``amp``, as the evaluator and search use).
    """
    if amp is not None and amp not in CHOICES["amp"]:
        raise EncoderInputError(f"amp={amp!r}: expected one of {', '.join(CHOICES['amp'])}")
    path = Path(path)
    device = resolve_device(device) if isinstance(device, str) else device
    if (path / CONFIG_FILE).is_file():
        cfg = run_config(path)
        model = load_retrieval_model(cfg, default_checkpoint(path / CONFIG_FILE), device)
    elif is_export_dir(path):
        cfg, state_dict = read_export(path)
        logger.info("loaded the export %s", path)
        model = retrieval_model(cfg, state_dict, device, str(path))
    elif path.is_file():
        state = read_checkpoint(path)
        cfg = _stored_config(state, path)
        model = retrieval_model(cfg, state["model"], device, str(path))
    elif not path.exists():
        raise EncoderInputError(f"{path}: no such file or folder; give a run folder, a .pth checkpoint or an "
                                f"export folder")
    else:
        raise EncoderInputError(f"{path}: neither a run folder ({CONFIG_FILE} and {BEST_CHECKPOINT}) nor an export "
                                f"folder ({LOCAL_DIR_CONFIG} and {WEIGHTS_FILE}, from tools/export_open_clip.py)")
    return Encoder(model, cfg, device, batch_size or cfg.test_batch_size, resolve_amp(amp or cfg.amp, device))
