"""OpenAI CLIP weights into the backbone (method §3): from a local file, the CLIP package's cache, or a download.

A local file is OpenAI's TorchScript archive (``ViT-B-16.pt``, as IRRA users have it) or a plain state dict.
Without a file, open_clip's ``<arch>-quickgelu`` with ``pretrained='openai'`` fetches and caches the weights;
its state dict has OpenAI's key layout. No downloader of our own.
"""
from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import Tensor

from model.clip import CLIP
from utils.checkpoint import refusal_message, refused_objects
from utils.errors import UserError
from utils.run_info import NOT_CACHED, RANDOM_WEIGHTS, file_record

# pretrain_choice -> open_clip model name (OpenAI's weights use QuickGELU, method §3).
OPEN_CLIP_NAMES = {"ViT-B/16": "ViT-B-16-quickgelu", "ViT-B/32": "ViT-B-32-quickgelu",
                   "ViT-L/14": "ViT-L-14-quickgelu"}
OPENAI_TAG = "openai"
# Scalars OpenAI's TorchScript archives carry next to the weights.
ARCHIVE_EXTRAS = ("input_resolution", "context_length", "vocab_size")
# Files open_clip's Hugging Face hub entries may hold, in its order of preference.
HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
URL_CACHE_DIR = Path("~/.cache/clip")  # where open_clip (and OpenAI's clip package) keep URL downloads
HUB_PROBE_TIMEOUT_S = 3.0  # seconds to wait for the weights host before treating the machine as offline


class PretrainedError(UserError, RuntimeError):
    """Pretrained weights that cannot be found, read, or fitted to the configured backbone."""


def check_file(path: str | os.PathLike) -> None:
    """Raise the error for a ``pretrain_path`` that names no file."""
    if not Path(path).is_file():
        raise PretrainedError(f"pretrain_path {path}: no such file; expected OpenAI's TorchScript archive "
                              f"(e.g. ViT-B-16.pt), a state dict saved with torch.save or a safetensors file "
                              f"(a relative path is read from the working directory)")


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Tensors of an OpenAI TorchScript archive, a ``torch.save``'d state dict, or a safetensors file."""
    from open_clip.factory import load_state_dict

    path = Path(path)
    check_file(path)
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format OpenAI ships
            warnings.simplefilter("ignore", FutureWarning)
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:  # not a TorchScript archive
        try:
            state = load_state_dict(str(path))
        except Exception as exc:
            refused = refused_objects(path, exc)
            if refused:
                raise PretrainedError(f"pretrain_path {refusal_message(path, refused)}") from None
            raise PretrainedError(f"pretrain_path {path}: not a TorchScript archive, state dict or safetensors "
                                  f"file ({exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise PretrainedError(f"pretrain_path {path}: expected a mapping of parameter names to tensors")
    return {k: v for k, v in state.items() if k not in ARCHIVE_EXTRAS}


def resize_pos_embed(posemb: Tensor, src_grid: Sequence[int], dst_grid: Sequence[int]) -> Tensor:
    """Bilinear resize of the patch part of a [1 + rows*cols, W] positional table; CLS row kept (method §3)."""
    cls_row, grid = posemb[:1], posemb[1:]
    grid = grid.reshape(1, src_grid[0], src_grid[1], -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=tuple(dst_grid), mode="bilinear", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(dst_grid[0] * dst_grid[1], -1).to(posemb.dtype)
    return torch.cat([cls_row, grid], dim=0)


def _config_keys_for(key: str) -> str:
    """The config keys that set the shape of checkpoint entry ``key``."""
    hints = (("visual.conv1.", "backbone.patch_size, backbone.vision_width"),
             ("visual.positional_embedding", "backbone.pretrain_grid, backbone.vision_width"),
             ("visual.proj", "backbone.vision_width, backbone.embed_dim"),
             ("visual.transformer.", "backbone.vision_width, backbone.vision_layers"),
             ("visual.", "backbone.vision_width"),
             ("token_embedding.", "backbone.vocab_size, backbone.text_width"),
             ("positional_embedding", "text_length, backbone.text_width"),
             ("text_projection", "backbone.text_width, backbone.embed_dim"),
             ("transformer.", "backbone.text_width, backbone.text_layers"))
    return next((keys for prefix, keys in hints if key.startswith(prefix)), "backbone.text_width")


def _check_fits(model: CLIP, state: dict[str, Tensor], source: str) -> None:
    """Raise one error listing every missing, unexpected or mis-shaped entry and the config keys to change."""
    own = model.state_dict()
    problems = [f"  {k}: missing from the checkpoint (set {_config_keys_for(k)})" for k in own if k not in state]
    problems += [f"  {k}: not in the configured backbone (set {_config_keys_for(k)})" for k in state if k not in own]
    problems += [f"  {k}: checkpoint {list(state[k].shape)} vs model {list(own[k].shape)} "
                 f"(set {_config_keys_for(k)})"
                 for k in own if k in state and state[k].shape != own[k].shape]
    if problems:
        raise PretrainedError(f"{source} does not fit the configured backbone "
                              f"(or change pretrain_choice):\n" + "\n".join(problems))


def _fit_positional_grid(model: CLIP, state: dict[str, Tensor], pretrain_grid: Sequence[int] | None,
                         source: str) -> None:
    """Resize the checkpoint's image positional grid to the model's img_size / stride grid in place."""
    key = "visual.positional_embedding"
    if key not in state:
        return
    rows = state[key].shape[0] - 1
    if pretrain_grid is None:  # OpenAI's grids are square
        side = round(rows ** 0.5)
        pretrain_grid = (side, side)
    if pretrain_grid[0] * pretrain_grid[1] != rows:
        raise PretrainedError(f"{source}: {key} holds {rows} patch positions, which is not "
                              f"backbone.pretrain_grid {list(pretrain_grid)}; set backbone.pretrain_grid")
    if tuple(pretrain_grid) != model.visual.grid:
        state[key] = resize_pos_embed(state[key].float(), pretrain_grid, model.visual.grid)  # fp16 archives


def _hub_reachable() -> bool:
    """Whether the Hugging Face hub answers quickly (False at once when HF_HUB_OFFLINE is set)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError:
        return False
    return True


def _cached_file(name: str) -> str | None:
    """A copy of the OpenAI weights already in open_clip's Hugging Face or URL cache, if any."""
    from huggingface_hub import try_to_load_from_cache
    from open_clip.pretrained import get_pretrained_cfg

    pcfg = get_pretrained_cfg(name, OPENAI_TAG)
    repo_id, filename = os.path.split(pcfg.get("hf_hub", ""))  # 'org/model/' names the repo's default file
    for candidate in ((filename,) if filename else HUB_FILES) if repo_id else ():
        found = try_to_load_from_cache(repo_id, candidate)
        if isinstance(found, str):
            return found
    url = pcfg.get("url", "")
    url_file = URL_CACHE_DIR.expanduser() / os.path.basename(url)
    return str(url_file) if url and url_file.is_file() else None


def openai_state_dict(choice: str) -> dict[str, Tensor]:
    """OpenAI's weights for ``choice`` from the CLIP package's cache, or downloaded through it when online."""
    if choice not in OPEN_CLIP_NAMES:
        raise PretrainedError(f"pretrain_choice {choice!r}: choose one of {list(OPEN_CLIP_NAMES)}, 'file' (with "
                              f"pretrain_path) or 'none'")
    name = OPEN_CLIP_NAMES[choice]
    cached = _cached_file(name)
    if cached:
        return read_state_dict(cached)
    archive = choice.replace("/", "-") + ".pt"
    where = (f"download OpenAI's {archive} (the archive IRRA uses) on a connected machine and set "
             f"pretrain_path to it, or set pretrain_choice: none for random weights")
    if not _hub_reachable():
        raise PretrainedError(f"pretrain_choice {choice}: OpenAI weights are not in the CLIP package's cache and "
                              f"the Hugging Face hub cannot be reached (offline); {where}")
    import open_clip

    try:
        return open_clip.create_model(name, pretrained=OPENAI_TAG, device="cpu").state_dict()
    except Exception as exc:
        raise PretrainedError(f"pretrain_choice {choice}: open_clip could not fetch {name} ({exc}); {where}") from exc


def weights_file(choice: str, path: str | None) -> str | None:
    """The file the backbone's pretrained weights are read from: ``path``, else the CLIP package's cached copy of
    OpenAI's weights; None for random weights (pretrain_choice none) or weights not cached yet."""
    if choice == "none":  # random weights: a pretrain_path is not read
        return None
    if path:
        return path
    return _cached_file(OPEN_CLIP_NAMES[choice]) if choice in OPEN_CLIP_NAMES else None


def pretrained_record(choice: str, path: str | None) -> dict[str, Any]:
    """The pretrained weights file's record for run_info.json: its path and SHA-256, or why there is none."""
    reason = RANDOM_WEIGHTS if choice == "none" else NOT_CACHED
    return file_record(weights_file(choice, path), reason)


def pretrained_state_dict(choice: str, path: str | None) -> dict[str, Tensor]:
    """OpenAI's weights from ``path`` when given, else through the CLIP package (cache first)."""
    return read_state_dict(path) if path else openai_state_dict(choice)


def apply_state_dict(model: CLIP, state: dict[str, Tensor], source: str,
                     pretrain_grid: Sequence[int] | None = None) -> None:
    """Copy ``state`` into ``model``, resizing the image positional grid ``pretrain_grid`` (square when None)."""
    _fit_positional_grid(model, state, pretrain_grid, source)
    _check_fits(model, state, source)
    model.load_state_dict(state)


def load_pretrained(model: CLIP, choice: str, path: str | None,
                    pretrain_grid: Sequence[int] | None = None) -> None:
    """Copy OpenAI's weights (``path`` if given, else via the CLIP package) into ``model`` (method §3)."""
    source = f"pretrain_path {path}" if path else f"pretrain_choice {choice}"
    apply_state_dict(model, pretrained_state_dict(choice, path), source, pretrain_grid)
