"""Search your own folder of pictures with a text query, using a trained run's retrieval model.

    python tools/search.py --config_file <run> --gallery DIR --query "a woman in a red coat"
        [--query "..."] [--queries FILE] [--checkpoint PATH] [--topk 10] [--out results.png] [--key value ...]

Every image under DIR (jpg, jpeg, png, bmp, webp; sub-folders included) is encoded once; the embeddings are
cached next to the gallery (``DIR.search_cache.pt``) and reused while the checkpoint, the encoder settings
and each file's size and modification time stay the same; new or changed files alone are re-encoded.
Unreadable files are reported by name and skipped. A query longer than the model reads (``text_length``
tokens) is truncated with a warning. For each query a table (rank, score, path) is printed and a PNG grid
is written: the query on top, the top-k images with rank and score. Extra ``--key value`` pairs override the
run's config (e.g. ``--device cuda``, ``--test_batch_size 128``). A run trained on the toy dataset (the demo)
gets a note: its model has read only the toy's captions, and a query in their pattern is shown.
"""
from __future__ import annotations

import argparse
import logging
import random
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # project imports when run as tools/search.py

from utils.cli import parse_first, run_cli  # noqa: E402
from utils.runs import add_run_arguments, config_file_arg, tool_checkpoint  # noqa: E402

DEFAULT_TOPK = 10
DEFAULT_OUT = "search_results.png"


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--gallery", required=True, help="folder of images to search (searched recursively)")
    parser.add_argument("--query", action="append", help="text query (repeat for several)")
    parser.add_argument("--queries", help="text file with one query per line")
    parser.add_argument("--topk", type=int, default=DEFAULT_TOPK, help="results per query")
    parser.add_argument("--out", default=DEFAULT_OUT, help="PNG of the results (numbered for several queries)")
    parser.add_argument("--cache", help="embedding cache file (default: <gallery>.search_cache.pt beside it)")
    args, overrides = parser.parse_known_args(argv)
    if args.topk < 1:
        parser.error(f"--topk {args.topk}: must be at least 1")
    return args, overrides


parse_first(parse_args, __name__)  # --help and argument mistakes answer here, before torch loads

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from prettytable import PrettyTable  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from tqdm import tqdm  # noqa: E402

from datasets.toy import example_caption, is_toy_dataset  # noqa: E402
from datasets.transforms import build_transform  # noqa: E402
from model.build import load_retrieval_model  # noqa: E402
from model.encode import encode_batch  # noqa: E402
from utils.config import Config, load_config  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.images import load_image  # noqa: E402
from utils.io import atomic_torch_save, check_output_folder  # noqa: E402
from utils.logger import setup_logger  # noqa: E402
from utils.precision import resolve_amp, resolve_device  # noqa: E402
from utils.tokenizer import tokenize_queries  # noqa: E402
from utils.visualize import GridLayout, Tile, draw_grid, save_png  # noqa: E402

logger = logging.getLogger("sgiha.search")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CACHE_SUFFIX = ".search_cache.pt"
CACHE_VERSION = 1  # bump when the cache's layout or the meaning of its key changes
# Config keys that change what encode_image computes (with the checkpoint and the AMP mode).
ENCODER_KEYS = ("img_size", "stride_size", "pretrain_choice", "backbone")
# Errors PIL raises for files that are not (complete) images; load_image turns OSError into a ValueError.
UNREADABLE_IMAGE_ERRORS = (ValueError, SyntaxError, Image.DecompressionBombError)
LAYOUT = GridLayout(label_lines=2)  # rank and score, then the file name


class SearchError(UserError, ValueError):
    """A gallery or query the search cannot use; the message names the option, the file and the fix."""


@dataclass
class GalleryIndex:
    """The encoded gallery: image paths (relative to ``root``) and their L2-normalised embeddings."""

    root: Path
    paths: list[str]
    features: torch.Tensor  # [N, D] float32, CPU, rows aligned with paths
    skipped: list[str]  # 'path: reason' of unreadable files
    encoded: int  # images encoded in this call (0: all came from the cache)


def file_stamp(path: Path) -> tuple[int, int]:
    """(modification time in ns, size in bytes): a change in either means the file changed."""
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def list_gallery(root: Path) -> list[str]:
    """Image files under ``root`` (recursively, by extension, case-insensitive), relative and sorted."""
    if not root.exists():
        raise SearchError(f"--gallery {root}: no such folder; give the folder of images to search")
    if not root.is_dir():
        raise SearchError(f"--gallery {root}: not a folder; give the folder that holds the images")
    found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not found:
        raise SearchError(f"--gallery {root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in it or below it")
    return found


def encoder_key(cfg: Config, checkpoint: Path, amp: str) -> dict[str, Any]:
    """What the cached embeddings depend on besides the image files themselves."""
    mtime_ns, size = file_stamp(checkpoint)
    settings = cfg.to_dict()
    return {
        "version": CACHE_VERSION,
        "checkpoint": {"path": str(checkpoint.resolve()), "mtime_ns": mtime_ns, "size": size},
        "config": {k: settings[k] for k in ENCODER_KEYS},
        "amp": amp,
    }


def default_cache_path(root: Path) -> Path:
    """``<gallery>.search_cache.pt`` beside the gallery folder."""
    root = root.resolve()
    return root.parent / f"{root.name}{CACHE_SUFFIX}"


def read_cache(path: Path, key: dict[str, Any]) -> dict[str, tuple[tuple[int, int], torch.Tensor]]:
    """Cached {relative path: (stamp, embedding)} when the cache exists and was made with ``key``, else {}."""
    if not path.is_file():
        return {}
    try:
        cache = torch.load(path, map_location="cpu", weights_only=True)
        if cache["key"] != key:
            logger.info("gallery cache %s was made with another checkpoint or settings: re-encoding", path)
            return {}
        return {p: (tuple(s), f) for p, s, f in zip(cache["paths"], cache["stamps"], cache["features"])}
    except Exception as exc:  # a torn or foreign file only costs a re-encode
        logger.warning("ignoring unreadable gallery cache %s (%s)", path, exc)
        return {}


def write_cache(path: Path, key: dict[str, Any], paths: list[str], stamps: list[tuple[int, int]],
                features: torch.Tensor) -> None:
    """Save the embeddings for the next search; a cache that cannot be written only costs a re-encode then."""
    try:
        atomic_torch_save({"key": key, "paths": paths, "stamps": [list(s) for s in stamps], "features": features},
                          path)
    except OSError as exc:
        logger.warning("could not write the gallery cache %s (%s): the next search encodes again; "
                       "--cache FILE puts the cache elsewhere", path, exc.strerror or exc)


class _GalleryImages(Dataset):
    """Items (index, image tensor, error message); unreadable files give a blank tensor and the message."""

    def __init__(self, files: list[Path], transform, size: tuple[int, int]):
        self.files, self.transform, self.size = files, transform, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, str]:
        try:
            return index, self.transform(load_image(str(self.files[index]))), ""
        except UNREADABLE_IMAGE_ERRORS as exc:
            message = str(exc) if str(self.files[index]) in str(exc) else f"{self.files[index]}: {exc}"
            return index, torch.zeros(3, *self.size), message


@torch.no_grad()
def encode_images(model: nn.Module, files: list[Path], cfg: Config, device: torch.device,
                  amp: str) -> tuple[dict[int, torch.Tensor], list[str]]:
    """Embeddings {index in files: feature} of the readable files and the errors of the unreadable ones."""
    dataset = _GalleryImages(files, build_transform(cfg, train=False), tuple(cfg.img_size))
    loader = DataLoader(dataset, batch_size=cfg.test_batch_size, shuffle=False, num_workers=cfg.num_workers)
    features: dict[int, torch.Tensor] = {}
    errors: list[str] = []
    for indices, images, messages in tqdm(loader, desc="encoding gallery", dynamic_ncols=True):
        ok = torch.tensor([not m for m in messages], dtype=torch.bool)
        errors.extend(m for m in messages if m)
        if ok.any():
            encoded = encode_batch(model.encode_image, images[ok], device, amp).cpu()
            features.update(zip(indices[ok].tolist(), encoded))
    return features, errors


def build_gallery_index(model: nn.Module, root: Path, cfg: Config, device: torch.device, amp: str,
                        key: dict[str, Any], cache_path: Path) -> GalleryIndex:
    """Embeddings of every image under ``root``: from the cache where still valid, encoded otherwise."""
    paths = list_gallery(root)
    stamps = [file_stamp(root / p) for p in paths]
    cached = read_cache(cache_path, key)
    features: dict[int, torch.Tensor] = {i: cached[p][1] for i, (p, s) in enumerate(zip(paths, stamps))
                                         if p in cached and cached[p][0] == s}
    todo = [i for i in range(len(paths)) if i not in features]
    skipped: list[str] = []
    if todo:
        fresh, skipped = encode_images(model, [root / paths[i] for i in todo], cfg, device, amp)
        features.update({todo[j]: f for j, f in fresh.items()})
    for message in skipped:
        logger.warning("skipping unreadable image %s", message)
    kept = sorted(features)
    if not kept:
        raise SearchError(f"--gallery {root}: none of its {len(paths)} image files could be read "
                          "(each is named in a warning above)")
    index = GalleryIndex(root, [paths[i] for i in kept], torch.stack([features[i] for i in kept]), skipped,
                         len(todo) - len(skipped))
    if index.encoded or len(cached) != len(kept) or any(p not in cached for p in index.paths):
        write_cache(cache_path, key, index.paths, [stamps[i] for i in kept], index.features)
    logger.info("gallery %s: %d images (%d encoded now, %d from the cache %s, %d skipped)", root, len(kept),
                index.encoded, len(kept) - index.encoded, cache_path, len(skipped))
    return index


@torch.no_grad()
def encode_queries(model: nn.Module, queries: Sequence[str], cfg: Config, device: torch.device,
                   amp: str) -> torch.Tensor:
    """L2-normalised text embeddings [Q, D] (float32, CPU) of the queries (truncated to text_length tokens), in
    batches of test_batch_size as the evaluator encodes captions."""
    ids = tokenize_queries(queries, cfg.text_length)
    return torch.cat([encode_batch(model.encode_text, chunk, device, amp).cpu()
                      for chunk in ids.split(cfg.test_batch_size)])


def rank(query_features: torch.Tensor, gallery_features: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine scores and gallery indices [Q, k] of the ``topk`` best images per query, best first.

    Ties keep gallery (file-name) order, so equal scores rank the same way on every run.
    """
    scores = query_features @ gallery_features.t()
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :topk]
    return torch.gather(scores, 1, order), order


def results_table(paths: Sequence[str], scores: Sequence[float]) -> str:
    """Rank, score and path of one query's results."""
    table = PrettyTable(["rank", "score", "path"])
    table.align["path"] = "l"
    for position, (path, score) in enumerate(zip(paths, scores), start=1):
        table.add_row([position, f"{score:.4f}", path])
    return table.get_string()


def draw_results(query: str, root: Path, paths: Sequence[str], scores: Sequence[float],
                 layout: GridLayout = LAYOUT) -> Image.Image:
    """The grid of one query: the query text on top, then each result with its rank, score and file name."""
    tiles = [Tile(load_image(str(root / path)), f"#{position}  {score:.3f}\n{Path(path).name}")
             for position, (path, score) in enumerate(zip(paths, scores), start=1)]
    return draw_grid(f"query: {query}", tiles, replace(layout, columns=min(layout.columns, max(1, len(tiles)))))


def output_paths(out: Path, count: int) -> list[Path]:
    """``out`` for one query; ``<stem>_01<suffix>``, ``<stem>_02<suffix>``... for several."""
    if count == 1:
        return [out]
    width = len(str(count))
    return [out.with_name(f"{out.stem}_{i:0{width}d}{out.suffix}") for i in range(1, count + 1)]


def read_query_file(path: Path) -> str:
    """The text of the --queries file, or a SearchError saying why it cannot be used."""
    if not path.is_file():
        raise SearchError(f"--queries {path}: file not found (expected a text file, one query per line)")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SearchError(f"--queries {path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                          "save it as UTF-8, one query per line") from exc
    except OSError as exc:
        raise SearchError(f"--queries {path}: cannot be read ({exc.strerror or exc})") from exc


def read_queries(args: argparse.Namespace) -> list[str]:
    """The --query texts, then the non-empty lines of --queries."""
    queries = [q.strip() for q in args.query or [] if q.strip()]
    if args.queries:
        queries += [line.strip() for line in read_query_file(Path(args.queries)).splitlines() if line.strip()]
    if not queries:
        raise SearchError("no query: give --query TEXT and/or --queries FILE (one query per line)")
    return queries


def toy_note(cfg: Config) -> str | None:
    """One line for a run trained on the toy dataset: its model knows only the toy's sentence pattern and words,
    with an example query made by the toy's own caption generator; None for any other run."""
    dataset_dir = Path(cfg.root_dir) / cfg.dataset_name
    if not is_toy_dataset(dataset_dir):
        return None
    example = example_caption(random.Random(cfg.seed))
    return (f"note: this run was trained on the toy dataset ({dataset_dir}): its model has read only the toy's "
            f"captions, so queries work in their pattern and words, e.g. --query \"{example}\"")


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Search; returns the PNG files written, one per query."""
    args, overrides = parse_args(argv)
    setup_logger(None)
    queries = read_queries(args)
    check_output_folder(Path(args.out).parent, f"--out {args.out}")
    config_file = config_file_arg(args.config_file)
    cfg = load_config(config_file, overrides)
    device = resolve_device(cfg.device)
    amp = resolve_amp(cfg.amp, device)
    checkpoint = tool_checkpoint(config_file, args.checkpoint)
    model = load_retrieval_model(cfg, checkpoint, device)
    root = Path(args.gallery)
    cache_path = Path(args.cache) if args.cache else default_cache_path(root)
    index = build_gallery_index(model, root, cfg, device, amp, encoder_key(cfg, checkpoint, amp), cache_path)
    note = toy_note(cfg)
    if note:
        print(note)
    scores, order = rank(encode_queries(model, queries, cfg, device, amp), index.features, args.topk)
    written = []
    for query, out, row_scores, row in zip(queries, output_paths(Path(args.out), len(queries)), scores, order):
        paths = [index.paths[i] for i in row.tolist()]
        print(f"\nquery: {query}\n{results_table([str(root / p) for p in paths], row_scores.tolist())}")
        written.append(save_png(draw_results(query, root, paths, row_scores.tolist()), out))
        print(f"wrote {out}")
    return written


if __name__ == "__main__":
    run_cli(main)
