"""The retrieval model (method §6.5) as an open_clip model: write an export folder and read one back.

An export folder holds three files:

- ``<name>.json``: an open_clip model config; ``open_clip.add_model_config(folder)`` makes ``name`` a model
  name for ``open_clip.create_model``. open_clip's model configs cannot state preprocessing (its CLIP and
  vision config classes take no mean, std, interpolation or resize-mode keys).
- ``open_clip_config.json``: ``{"model_cfg": ..., "preprocess_cfg": ...}``, the file open_clip's
  ``'local-dir:<folder>'`` models read; its preprocessing is this project's evaluation transform.
- ``open_clip_model.safetensors``: the backbone's state dict. This project's CLIP keeps OpenAI's key names,
  which open_clip's ``CLIP`` uses too (``logit_scale`` included; the causal mask is not saved by either).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from model.transformer import MLP_RATIO
from utils.config import Config, ConfigError, load_config
from utils.errors import UserError
from utils.images import CLIP_MEAN, CLIP_STD, RESIZE_INTERPOLATION
from utils.io import atomic_save_safetensors, atomic_write_text

LOCAL_DIR_CONFIG = "open_clip_config.json"  # the config file of open_clip's 'local-dir:' models
WEIGHTS_FILE = "open_clip_model.safetensors"  # the first weights name open_clip looks for in such a folder
RESIZE_MODE = "squash"  # open_clip's name for resizing the whole image to (H, W), as datasets/transforms.py does
# Characters of a model name: open_clip finds a model config by its file name and turns '/' in a name into '-'.
RETRIEVAL_LOSSES = "sdm+id"  # the recipe named in an export's config: no training head is built or configured
NAME_CHARS = "A-Za-z0-9._-"
NAME_PATTERN = re.compile(f"[A-Za-z0-9][{NAME_CHARS}]*")


class ExportError(UserError, ValueError):
    """A run that open_clip cannot represent, a bad model name, or a folder that is not an export."""


@dataclass(frozen=True)
class ExportFiles:
    """What ``write_export`` wrote."""

    name: str  # the open_clip model name (after add_model_config)
    model_config: Path  # <name>.json
    local_config: Path  # open_clip_config.json
    weights: Path  # open_clip_model.safetensors


def check_exportable(cfg: Config) -> None:
    """open_clip's ViT embeds non-overlapping patches: the stride must be the patch size."""
    if cfg.stride_size != cfg.backbone.patch_size:
        raise ExportError(f"stride_size {cfg.stride_size} differs from backbone.patch_size "
                          f"{cfg.backbone.patch_size}: open_clip's ViT has no overlapping patches, so only runs "
                          f"trained with stride_size = backbone.patch_size can be exported")


def check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise ExportError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (starting with a letter or "
                          f"digit); open_clip looks a model up by its config's file name")


def model_config(cfg: Config) -> dict[str, Any]:
    """The open_clip model config of the backbone ``cfg`` describes (method §3: QuickGELU, MLP 4x)."""
    check_exportable(cfg)
    b = cfg.backbone
    return {
        "embed_dim": b.embed_dim,
        "quick_gelu": True,
        "vision_cfg": {"image_size": list(cfg.img_size), "layers": b.vision_layers, "width": b.vision_width,
                       "patch_size": b.patch_size, "head_width": b.vision_width // b.vision_heads,
                       "mlp_ratio": MLP_RATIO},
        "text_cfg": {"context_length": cfg.text_length, "vocab_size": b.vocab_size, "width": b.text_width,
                     "heads": b.text_heads, "layers": b.text_layers, "mlp_ratio": MLP_RATIO},
    }


def preprocess_config(cfg: Config) -> dict[str, Any]:
    """open_clip's preprocessing settings for ``build_transform(cfg, train=False)``."""
    return {"size": list(cfg.img_size), "mean": list(CLIP_MEAN), "std": list(CLIP_STD),
            "interpolation": RESIZE_INTERPOLATION, "resize_mode": RESIZE_MODE}


def _json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


def write_export(cfg: Config, state_dict: Mapping[str, Tensor], folder: str | os.PathLike,
                 name: str) -> ExportFiles:
    """Write the model config, the local-dir config and the weights of a retrieval model into ``folder``."""
    check_name(name)
    folder = Path(folder)
    model_cfg = model_config(cfg)
    files = ExportFiles(name, folder / f"{name}.json", folder / LOCAL_DIR_CONFIG, folder / WEIGHTS_FILE)
    atomic_save_safetensors({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, files.weights)
    atomic_write_text(files.model_config, _json(model_cfg))
    atomic_write_text(files.local_config, _json({"model_cfg": model_cfg, "preprocess_cfg": preprocess_config(cfg)}))
    return files


def is_export_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / LOCAL_DIR_CONFIG).is_file()


def _differences(found: Any, expected: Any, key: str = "") -> list[str]:
    """'key: found X, expected Y' for every leaf where two JSON-like values differ."""
    if isinstance(found, dict) and isinstance(expected, dict):
        return [line for k in sorted(set(found) | set(expected), key=str)
                for line in _differences(found.get(k), expected.get(k), f"{key}.{k}" if key else str(k))]
    return [] if found == expected else [f"{key}: found {found!r}, expected {expected!r}"]


def config_from_model_config(model_cfg: Mapping[str, Any], source: str) -> Config:
    """This project's config for the backbone an exported model config describes (the inverse of model_config)."""
    try:
        vision, text = model_cfg["vision_cfg"], model_cfg["text_cfg"]
        backbone = {"embed_dim": model_cfg["embed_dim"], "vision_width": vision["width"],
                    "vision_layers": vision["layers"], "vision_heads": vision["width"] // vision["head_width"],
                    "patch_size": vision["patch_size"], "text_width": text["width"], "text_layers": text["layers"],
                    "text_heads": text["heads"], "vocab_size": text["vocab_size"]}
        # the retrieval model's config: the backbone alone (no training heads to configure)
        cfg = load_config(None, {"pretrain_choice": "none", "loss_names": RETRIEVAL_LOSSES,
                                 "img_size": vision["image_size"],
                                 "stride_size": vision["patch_size"], "text_length": text["context_length"],
                                 "backbone": backbone})
    except (KeyError, TypeError, ZeroDivisionError, ConfigError) as exc:
        raise ExportError(f"{source}: not a model config tools/export_open_clip.py writes ({exc!r})") from exc
    differences = _differences(dict(model_cfg), model_config(cfg))
    if differences:
        raise ExportError(f"{source}: settings this project's CLIP does not have: {'; '.join(differences)}")
    return cfg


def read_export(folder: str | os.PathLike) -> tuple[Config, dict[str, Tensor]]:
    """The backbone config and the weights of an export folder."""
    folder = Path(folder)
    config_path, weights_path = folder / LOCAL_DIR_CONFIG, folder / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise ExportError(f"{folder}: not an export of tools/export_open_clip.py (it holds {LOCAL_DIR_CONFIG} "
                          f"and {WEIGHTS_FILE})")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ExportError(f"{config_path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or "model_cfg" not in data:
        raise ExportError(f"{config_path}: expected a JSON object with 'model_cfg' and 'preprocess_cfg'")
    cfg = config_from_model_config(data["model_cfg"], str(config_path))
    differences = _differences(data.get("preprocess_cfg"), preprocess_config(cfg))
    if differences:
        raise ExportError(f"{config_path}: preprocess_cfg differs from this project's evaluation transform, which "
                          f"encoding uses: {'; '.join(differences)}")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise ExportError(f"{weights_path}: not a readable safetensors file ({exc})") from exc
    return cfg, state
