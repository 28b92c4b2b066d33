"""Phrase-grounding maps of a trained SG-IHA head: where each masked attribute phrase looks in the image.

    python tools/visualize_grounding.py --config_file <run> [--checkpoint PATH] [--split test]
        [--caption "..." --image PATH] [--num N] [--out PNG] [--json] [--key value ...]

For a caption and its image, each attribute phrase is masked in turn (method §6.1) and the attention of the masked
positions over the image patches in each SG-IHA block (one per tapped layer, method §6.3.2) is drawn as a heat map
over the image, then the mean of the layers ("combined"). Without --caption, --num images of the split (spread
evenly) are drawn with their first caption. The picture is a grid of examples, as many side by side as fit in
MAX_WIDTH pixels: each example is its caption (whole), then a row per phrase (the image under the phrase, each
layer's map, the combined map); every text is wrapped, never cut.

On toy data (toy_regions.json beside the annotation, written by datasets/toy.py) every caption of the split is
scored with the pointing game: the share of phrases whose combined map peaks on a patch that covers pixels of the
named part, next to the chance rate (the share of the image's patches that cover the part: a random pointer's
score), overall and per part. --json prints
{"pointing_accuracy", "chance", "per_type": {part: {"accuracy", "chance", "count"}}} on stdout. The picture goes
to ``<run>/grounding.png`` unless --out says otherwise.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # project imports when run as tools/...py

from utils.cli import parse_first, run_cli  # noqa: E402
from utils.runs import add_run_arguments, config_file_arg, tool_checkpoint  # noqa: E402

DEFAULT_NUM = 4  # images drawn
OUT_NAME = "grounding.png"


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--split", default="test", help="split whose images are drawn and scored (default test)")
    parser.add_argument("--caption", help="draw this caption's phrases over --image instead of the split")
    parser.add_argument("--image", help="the image of --caption")
    parser.add_argument("--num", type=int, default=DEFAULT_NUM, help=f"images drawn (default {DEFAULT_NUM})")
    parser.add_argument("--out", help=f"the PNG (default: <run>/{OUT_NAME})")
    parser.add_argument("--json", action="store_true", help="print the pointing-game scores as JSON on stdout")
    args, overrides = parser.parse_known_args(argv)
    if (args.caption is None) != (args.image is None):
        parser.error("--caption and --image go together")
    if args.num < 1:
        parser.error(f"--num {args.num}: must be at least 1")
    return args, overrides


parse_first(parse_args, __name__)  # --help and argument mistakes answer here, before torch loads

import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from prettytable import PrettyTable  # noqa: E402

from datasets.aqa import find_occurrences, is_valid_phrase  # noqa: E402
from datasets.bases import DatasetError, Record, dataset_files, parse_records, read_annotation  # noqa: E402
from datasets.phrases import extract_phrases  # noqa: E402
from datasets.toy import REGION_PARTS, decode_labels, read_regions  # noqa: E402
from datasets.transforms import build_transform  # noqa: E402
from inference.grounding import (  # noqa: E402
    Question,
    attention_maps,
    encode_questions,
    load_grounding_model,
    patches_on_part,
    pointing_hit,
    with_combined,
)
from tools.visualize_test import pick_queries  # noqa: E402
from utils.config import Config, load_config  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.images import load_image  # noqa: E402
from utils.precision import resolve_device  # noqa: E402
from utils.tokenizer import get_tokenizer  # noqa: E402
from utils.visualize import GridLayout, Tile, draw_grid, draw_panels, fitted_layout, save_png  # noqa: E402

logger = logging.getLogger("sgiha.visualize_grounding")

HEAT_ALPHA = 0.55  # weight of the heat map over the image
COLORMAP = "jet"
MAX_WIDTH = 2000  # pixels: examples sit side by side up to this width, readable at 100% zoom on a wide screen
TITLE = "Where SG-IHA's masked phrase looks (cross-attention over image patches; warm colours: more attention)"


def caption_questions(caption: str, image: int, cfg: Config) -> list[Question]:
    """A question for each valid attribute phrase of ``caption`` (method §6.1's extraction and validity rule)."""
    phrases = dict.fromkeys(p for p in extract_phrases(caption, cfg.phrase_backend)
                            if is_valid_phrase(p, cfg.sgiha.min_word_len) and find_occurrences(caption, p))
    return [Question(image, caption, phrase) for phrase in phrases]


def toy_questions(caption: str, image: int, phrases: dict[str, str]) -> list[Question]:
    """A question for each part of the image whose phrase the caption names."""
    return [Question(image, caption, phrase, part) for part, phrase in phrases.items()
            if find_occurrences(caption, phrase)]


def split_records(cfg: Config, split: str) -> tuple[list[Record], Path]:
    """The split's records and the dataset folder."""
    files = dataset_files(cfg.dataset_name, cfg.root_dir, cfg.annotation_file)
    records = [r for r in parse_records(files, read_annotation(files.annotation).records) if r.split == split]
    if not records:
        raise DatasetError(f"{files.annotation}: no record has split '{split}'")
    return records, files.annotation.parent


def compute_maps(model, questions: list[Question], images: list[Image.Image], cfg: Config,
                 device: torch.device) -> torch.Tensor:
    """[Q, layers + 1, rows, cols] maps of every question, in batches of test_batch_size."""
    tokenizer, transform = get_tokenizer(), build_transform(cfg, train=False)
    out = []
    for start in range(0, len(questions), cfg.test_batch_size):
        chunk = questions[start:start + cfg.test_batch_size]
        ids, masked = encode_questions(chunk, tokenizer, cfg)
        pixels = torch.stack([transform(images[q.image]) for q in chunk])
        out.append(with_combined(attention_maps(model, pixels.to(device), ids.to(device), masked.to(device))).cpu())
    return torch.cat(out)


def pointing_game(maps: torch.Tensor, questions: list[Question], labels: list[np.ndarray],
                  cfg: Config, grid: tuple[int, int]) -> tuple[dict, list[bool]]:
    """Scores of the combined maps and each question's hit."""
    hits: dict[str, list[bool]] = defaultdict(list)
    chances: dict[str, list[float]] = defaultdict(list)
    verdicts = []
    for q, qmap in zip(questions, maps[:, -1].flatten(1).numpy()):
        label = labels[q.image]
        inside = patches_on_part(label, REGION_PARTS.index(q.part) + 1, grid, cfg.backbone.patch_size,
                                 cfg.stride_size, cfg.img_size)
        verdicts.append(pointing_hit(qmap, inside))
        hits[q.part].append(verdicts[-1])
        chances[q.part].append(float(inside.mean()))
    every_hit = [h for part in hits for h in hits[part]]
    every_chance = [c for part in chances for c in chances[part]]
    per_type = {part: {"accuracy": float(np.mean(hits[part])), "chance": float(np.mean(chances[part])),
                       "count": len(hits[part])} for part in REGION_PARTS if part in hits}
    scores = {"pointing_accuracy": float(np.mean(every_hit)), "chance": float(np.mean(every_chance)),
              "per_type": per_type}
    return scores, verdicts


def first_caption_questions(questions: list[Question], first: dict[int, str]) -> list[int]:
    """Indices of the questions to draw: each phrase of a shown image's first caption once (``first``: image index
    -> its first caption), although an image's captions may be equal and so ask the same question twice."""
    keep, seen = [], set()
    for j, q in enumerate(questions):
        if first.get(q.image) == q.caption and (q.image, q.phrase) not in seen:
            seen.add((q.image, q.phrase))
            keep.append(j)
    return keep


def heat_overlay(image: Image.Image, attention: np.ndarray) -> Image.Image:
    """``attention`` [rows, cols] scaled to [0, 1], coloured and blended over ``image``."""
    span = attention.max() - attention.min()
    scaled = (attention - attention.min()) / span if span > 0 else np.zeros_like(attention)
    colours = (matplotlib.colormaps[COLORMAP](scaled)[..., :3] * 255).astype(np.uint8)
    heat = Image.fromarray(colours).resize(image.size, Image.Resampling.BILINEAR)
    return Image.blend(image.convert("RGB"), heat, HEAT_ALPHA)


def example_tiles(questions: Sequence[Question], maps: torch.Tensor, images: list[Image.Image], names: Sequence[str],
                  verdicts: Sequence[bool] | None) -> list[Tile]:
    """A row per question: the image under its phrase (and part), then a heat map per name (layers, combined)."""
    tiles = []
    for i, q in enumerate(questions):
        tiles.append(Tile(images[q.image], f'"{q.phrase}"' + (f"\n({q.part})" if q.part else "")))
        for name, qmap in zip(names, maps[i].numpy()):
            verdict = "" if verdicts is None or name != "combined" else \
                ("\npeak on part" if verdicts[i] else "\npeak off part")
            tiles.append(Tile(heat_overlay(images[q.image], qmap), f"{name}{verdict}"))
    return tiles


def example_panels(questions: list[Question], maps: torch.Tensor, images: list[Image.Image], layers: Sequence[int],
                   verdicts: list[bool] | None) -> list[Image.Image]:
    """One panel per drawn caption of an image: the caption, then a row per question; every text whole, and the
    same text lines in every panel, so that the panels' rows line up."""
    names = [f"layer {k}" for k in layers] + ["combined"]
    examples = []
    for image, caption in dict.fromkeys((q.image, q.caption) for q in questions):
        rows = [i for i, q in enumerate(questions) if (q.image, q.caption) == (image, caption)]
        examples.append((caption, example_tiles([questions[i] for i in rows], maps[rows], images, names,
                                                None if verdicts is None else [verdicts[i] for i in rows])))
    base = GridLayout(columns=len(names) + 1)
    fitted = [fitted_layout(base, caption, [t.label for t in tiles]) for caption, tiles in examples]
    layout = replace(base, header_lines=max(f.header_lines for f in fitted),
                     label_lines=max(f.label_lines for f in fitted))
    return [draw_grid(caption, tiles, layout) for caption, tiles in examples]


def draw(questions: list[Question], maps: torch.Tensor, images: list[Image.Image], layers: Sequence[int],
         verdicts: list[bool] | None) -> Image.Image:
    """The example panels side by side within MAX_WIDTH pixels, under the title."""
    return draw_panels(TITLE, example_panels(questions, maps, images, layers, verdicts), MAX_WIDTH, GridLayout())


def main(argv: Sequence[str] | None = None) -> dict | None:
    """Draw (and score on toy data); returns the pointing-game scores (None without regions)."""
    args, overrides = parse_args(argv)
    # Progress goes to stderr, so that stdout holds only the table or the JSON.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s: %(message)s")
    config_file = config_file_arg(args.config_file)
    cfg = load_config(config_file, overrides)
    device = resolve_device(cfg.device)
    checkpoint = tool_checkpoint(config_file, args.checkpoint)
    model = load_grounding_model(cfg, checkpoint, device)
    out = Path(args.out) if args.out else config_file.resolve().parent / OUT_NAME
    scores, verdicts = None, None
    if args.json and (args.caption is not None or read_regions(split_records(cfg, args.split)[1]) is None):
        raise UserError("--json: the pointing game needs the split of a toy dataset (toy_regions.json beside the "
                        "annotation); real data and --caption only get the picture")
    if args.caption is not None:
        images = [load_image(args.image)]
        drawn = caption_questions(args.caption, 0, cfg)
        if not drawn:
            raise UserError(f"--caption {args.caption!r}: has no attribute phrase to mask")
        maps = compute_maps(model, drawn, images, cfg, device)
    else:
        records, dataset_dir = split_records(cfg, args.split)
        regions = read_regions(dataset_dir)
        images = [load_image(r.img_path) for r in records]
        shown = set(pick_queries(len(records), args.num))
        if regions is None:
            drawn = [q for i in sorted(shown) for q in caption_questions(records[i].captions[0], i, cfg)]
            maps = compute_maps(model, drawn, images, cfg, device)
        else:
            entries = [regions["images"].get(Path(r.img_path).relative_to(dataset_dir).as_posix()) for r in records]
            if any(e is None for e in entries):
                raise DatasetError(f"{dataset_dir / 'toy_regions.json'}: lacks images of split '{args.split}'; "
                                   f"regenerate the toy dataset")
            labels = [decode_labels(e["labels"], images[i].size[::-1]) for i, e in enumerate(entries)]
            every = [q for i, r in enumerate(records) for c in r.captions
                     for q in toy_questions(c, i, entries[i]["phrases"])]
            every_maps = compute_maps(model, every, images, cfg, device)
            scores, hits = pointing_game(every_maps, every, labels, cfg, model.backbone.visual.grid)
            keep = first_caption_questions(every, {i: records[i].captions[0] for i in shown})
            drawn, maps, verdicts = [every[j] for j in keep], every_maps[keep], [hits[j] for j in keep]
    path = save_png(draw(drawn, maps, images, model.sgiha.layers, verdicts), out)
    logger.info("wrote %s", path)
    if scores is not None:
        if args.json:
            print(json.dumps(scores))
        else:
            table = PrettyTable(["phrase type", "phrases", "pointing accuracy %", "chance %"])
            for part, s in scores["per_type"].items():
                table.add_row([part, s["count"], f"{100 * s['accuracy']:.1f}", f"{100 * s['chance']:.1f}"])
            table.add_row(["all", sum(s["count"] for s in scores["per_type"].values()),
                           f"{100 * scores['pointing_accuracy']:.1f}", f"{100 * scores['chance']:.1f}"])
            print(table.get_string())
    return scores


if __name__ == "__main__":
    run_cli(main)
