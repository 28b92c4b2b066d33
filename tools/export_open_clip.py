"""Export a trained run's retrieval model (the CLIP backbone, method §6.5) for open_clip.

    python tools/export_open_clip.py --config_file <run> --out DIR [--checkpoint PATH] [--name NAME] [--half]

Writes into DIR the open_clip model config ``NAME.json``, ``open_clip_config.json`` (the same model config with
this project's evaluation preprocessing, for open_clip's ``local-dir:DIR`` models) and the weights
``open_clip_model.safetensors``, then prints the Python that loads them. NAME defaults to ``sgiha-<run folder>``.
Only runs whose patch stride equals the patch size export (open_clip's ViT has no overlapping patches).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # project imports when run as tools/...py

from utils.cli import parse_first, run_cli  # noqa: E402
from utils.runs import BEST_CHECKPOINT, CHECKPOINT_RULE, config_file_arg, tool_checkpoint  # noqa: E402


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_file", required=True, help="a run folder or its configs.yaml")
    parser.add_argument("--checkpoint", help=f"checkpoint to export (default: the run's {BEST_CHECKPOINT}; "
                                             f"{CHECKPOINT_RULE})")
    parser.add_argument("--out", required=True, help="folder to write the export into")
    parser.add_argument("--name", help="open_clip model name (default: sgiha-<run folder name>)")
    parser.add_argument("--half", action="store_true", help="store the weights in fp16 (half the file size; "
                                                            "open_clip and pretrain_path cast them back on load)")
    return parser.parse_args(argv)


parse_first(parse_args, __name__)  # --help and argument mistakes answer here, before torch loads

import torch  # noqa: E402

from model.build import load_retrieval_model  # noqa: E402
from model.open_clip_format import NAME_CHARS, RESIZE_MODE, ExportFiles, check_exportable, check_name, write_export  # noqa: E402
from utils.checkpoint import CheckpointError  # noqa: E402
from utils.config import load_config  # noqa: E402
from utils.images import RESIZE_INTERPOLATION  # noqa: E402
from utils.io import check_output_folder  # noqa: E402
from utils.logger import setup_logger  # noqa: E402

NAME_PREFIX = "sgiha-"  # default model name: this prefix and the run folder's name


def default_name(config_file: Path) -> str:
    """``sgiha-<run folder>``, with characters open_clip's name lookup cannot take replaced by '-'."""
    folder = Path(config_file).resolve().parent.name
    return NAME_PREFIX + re.sub(f"[^{NAME_CHARS}]", "-", folder)


def loading_code(files: ExportFiles) -> str:
    """The Python that loads the export with open_clip, preprocessing included."""
    folder = json.dumps(str(files.weights.parent.resolve()))
    name, weights = json.dumps(files.name), json.dumps(str(files.weights.resolve()))
    local = json.dumps(f"local-dir:{files.weights.parent.resolve()}")
    return "\n".join([
        "import open_clip",
        f"open_clip.add_model_config({folder})",
        f"model, _, preprocess = open_clip.create_model_and_transforms({name}, pretrained={weights}, "
        f"image_interpolation={json.dumps(RESIZE_INTERPOLATION)}, image_resize_mode={json.dumps(RESIZE_MODE)})",
        f"tokenizer = open_clip.get_tokenizer({name})",
        "# or, preprocessing read from the folder:",
        f"model, _, preprocess = open_clip.create_model_and_transforms({local})",
        f"tokenizer = open_clip.get_tokenizer({local})",
    ])


def main(argv: Sequence[str] | None = None) -> ExportFiles:
    """Export; returns the files written."""
    args = parse_args(argv)
    setup_logger(None)
    check_output_folder(args.out, f"--out {args.out}")
    config_file = config_file_arg(args.config_file)
    cfg = load_config(config_file)
    check_exportable(cfg)  # before reading a checkpoint of hundreds of MB
    name = args.name or default_name(config_file)
    check_name(name)
    checkpoint = tool_checkpoint(config_file, args.checkpoint)
    if not checkpoint.is_file() and not args.checkpoint:
        raise CheckpointError(f"--config_file {args.config_file}: no {BEST_CHECKPOINT} beside it; give a run "
                              f"folder (<output_dir>/<dataset>/<run>/) or --checkpoint")
    model = load_retrieval_model(cfg, checkpoint, torch.device("cpu"))
    state = {k: v.half() if args.half and v.is_floating_point() else v for k, v in model.state_dict().items()}
    files = write_export(cfg, state, Path(args.out), name)
    print(f"wrote {files.model_config}, {files.local_config} and {files.weights}; load them with:\n")
    print(loading_code(files))
    return files


if __name__ == "__main__":
    run_cli(main)
