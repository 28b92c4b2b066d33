"""Look at a trained run's retrieval on its benchmark's test split, one picture per query.

    python tools/visualize_test.py --config_file <run> [--checkpoint PATH] [--num_queries 8]
        [--topk 10] [--out_dir DIR] [--key value ...]

Queries are spread evenly over the test captions. Each PNG shows the caption, the rank of the first image of
the queried identity in the whole gallery, and the top-k images framed green (the queried identity) or red
(another identity). Files go to ``<run>/test_queries/query_<index>.png`` unless --out_dir says otherwise.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # project imports when run as tools/...py

from utils.cli import parse_first, run_cli  # noqa: E402
from utils.runs import add_run_arguments, config_file_arg, tool_checkpoint  # noqa: E402

DEFAULT_NUM_QUERIES = 8
DEFAULT_TOPK = 10
OUT_DIR_NAME = "test_queries"


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--num_queries", type=int, default=DEFAULT_NUM_QUERIES, help="test captions to show")
    parser.add_argument("--topk", type=int, default=DEFAULT_TOPK, help="images per query")
    parser.add_argument("--out_dir", help=f"folder of the PNGs (default: <run>/{OUT_DIR_NAME})")
    args, overrides = parser.parse_known_args(argv)
    for name in ("num_queries", "topk"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)}: must be at least 1")
    return args, overrides


parse_first(parse_args, __name__)  # --help and argument mistakes answer here, before torch loads

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from prettytable import PrettyTable  # noqa: E402
from torch import nn  # noqa: E402

from datasets.bases import DatasetError  # noqa: E402
from datasets.build import EvalSet, build_eval_sets  # noqa: E402
from model.build import load_retrieval_model  # noqa: E402
from model.encode import encode_loader  # noqa: E402
from tools.search import encode_queries, rank  # noqa: E402
from utils.config import Config, load_config  # noqa: E402
from utils.images import load_image  # noqa: E402
from utils.io import check_output_folder  # noqa: E402
from utils.logger import setup_logger  # noqa: E402
from utils.precision import resolve_amp, resolve_device  # noqa: E402
from utils.visualize import Color, GridLayout, Tile, draw_grid, save_png  # noqa: E402

logger = logging.getLogger("sgiha.visualize_test")

HIT_COLOR: Color = (0, 170, 0)    # frame of an image of the queried identity
MISS_COLOR: Color = (210, 0, 0)   # frame of an image of another identity
LAYOUT = GridLayout(label_lines=2)  # rank and score, then the identity


@dataclass(frozen=True)
class QueryResult:
    """One visualised query: its caption index and identity, the top-k gallery indices and scores."""

    index: int
    pid: int
    caption: str
    top: list[int]
    scores: list[float]
    first_hit: int | None  # 1-based rank of the first image of the identity in the whole gallery


def pick_queries(num_captions: int, count: int) -> list[int]:
    """``count`` caption indices spread evenly from the first to the last (all of them if fewer)."""
    if count >= num_captions:
        return list(range(num_captions))
    return sorted({round(i * (num_captions - 1) / max(1, count - 1)) for i in range(count)})


def first_hit_rank(scores: torch.Tensor, g_pids: torch.Tensor, pid: int) -> int | None:
    """1-based rank of the best-scoring image of identity ``pid`` (ties in gallery order), None if absent."""
    hits = g_pids[torch.sort(scores, descending=True, stable=True).indices] == pid
    return int(hits.nonzero()[0, 0]) + 1 if hits.any() else None


def load_test_split(cfg: Config) -> EvalSet:
    """The benchmark's test split as an EvalSet (loaders over its images and captions)."""
    sets = build_eval_sets(cfg, splits=("test",))
    if "test" not in sets:
        raise DatasetError(f"{cfg.dataset_name} under {cfg.root_dir}: no record has split 'test'")
    return sets["test"]


def retrieve(model: nn.Module, eval_set: EvalSet, query_indices: Sequence[int], topk: int, cfg: Config,
             device: torch.device, amp: str) -> list[QueryResult]:
    """Top-k gallery images and first-hit rank of each chosen test caption."""
    gallery, g_pids = encode_loader(model.encode_image, eval_set.image_loader, device, amp, "test images")
    gallery, g_pids = gallery.cpu(), g_pids.cpu()
    captions = [eval_set.captions[i] for i in query_indices]
    queries = encode_queries(model, captions, cfg, device, amp)
    scores, order = rank(queries, gallery, topk)
    full = queries @ gallery.t()
    results = []
    for row, index in enumerate(query_indices):
        pid = int(eval_set.q_pids[index])
        results.append(QueryResult(index, pid, captions[row], order[row].tolist(), scores[row].tolist(),
                                   first_hit_rank(full[row], g_pids, pid)))
    return results


def draw_query(result: QueryResult, eval_set: EvalSet, layout: GridLayout = LAYOUT) -> Image.Image:
    """The picture of one query: first-hit rank and caption on top, framed top-k images below."""
    tiles = []
    for position, (g, score) in enumerate(zip(result.top, result.scores), start=1):
        g_pid = int(eval_set.g_pids[g])
        color = HIT_COLOR if g_pid == result.pid else MISS_COLOR
        tiles.append(Tile(load_image(eval_set.img_paths[g]), f"#{position}  {score:.3f}\nid {g_pid}", color))
    found = f"first correct image at rank {result.first_hit}" if result.first_hit else "identity not in the gallery"
    header = f"query {result.index} (identity {result.pid}): {found}\n{result.caption}"
    return draw_grid(header, tiles, replace(layout, columns=min(layout.columns, max(1, len(tiles)))))


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Visualise; returns the PNG files written."""
    args, overrides = parse_args(argv)
    setup_logger(None)
    config_file = config_file_arg(args.config_file)
    out_dir = Path(args.out_dir) if args.out_dir else config_file.resolve().parent / OUT_DIR_NAME
    check_output_folder(out_dir, f"--out_dir {args.out_dir or out_dir}")
    cfg = load_config(config_file, overrides)
    device = resolve_device(cfg.device)
    amp = resolve_amp(cfg.amp, device)
    checkpoint = tool_checkpoint(config_file, args.checkpoint)
    model = load_retrieval_model(cfg, checkpoint, device)
    eval_set = load_test_split(cfg)
    results = retrieve(model, eval_set, pick_queries(len(eval_set.captions), args.num_queries), args.topk, cfg,
                       device, amp)
    table = PrettyTable(["query", "identity", "first correct rank", "picture"])
    written = []
    width = len(str(len(eval_set.captions) - 1))
    for result in results:
        path = save_png(draw_query(result, eval_set), out_dir / f"query_{result.index:0{width}d}.png")
        table.add_row([result.index, result.pid, result.first_hit or "-", path])
        written.append(path)
    print(table.get_string())
    return written


if __name__ == "__main__":
    run_cli(main)
