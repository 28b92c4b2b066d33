"""tools/search.py: right identity first on the toy dataset, embedding cache reuse/invalidation, unreadable
files skipped with a warning, and the command line end to end with a real (tiny, random) CLIP."""
from __future__ import annotations

import json
import logging
import os
import random
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from datasets.toy import COLOURS, LOWER_TYPES, PART_VERBS, SUBJECTS, UPPER_TYPES, example_caption, make_toy_dataset
from datasets.transforms import build_transform
from model.build import build_retrieval_model
from tests.tiny_run import DEMO
from tools import search
from utils.checkpoint import save_checkpoint
from utils.config import load_config, save_config
from utils.tokenizer import get_tokenizer, tokenize_queries
from utils.visualize import GridLayout

TINY = {"img_size": [32, 16], "text_length": 40, "num_workers": 0, "test_batch_size": 4, "device": "cpu",
        "backbone.embed_dim": 16, "backbone.vision_width": 16, "backbone.text_width": 16,
        "backbone.vision_layers": 1, "backbone.text_layers": 1, "backbone.vision_heads": 2,
        "backbone.text_heads": 2, "sgiha.layers": [1]}
COLOUR_NAMES = list(COLOURS)
_GARMENT = re.compile(r"\b({c}) ({t})\b".format(c="|".join(COLOUR_NAMES),
                                                t="|".join(sorted(UPPER_TYPES + LOWER_TYPES, key=len, reverse=True))))


def outfit_vector(text: str) -> torch.Tensor:
    """One-hot upper colour then one-hot lower colour, read from a toy caption (or a typed query)."""
    text = re.sub(r"\s*-\s*", "-", text.lower())  # the BPE decoder spaces out 't-shirt'
    vector = torch.zeros(2 * len(COLOUR_NAMES))
    for colour, kind in _GARMENT.findall(text):
        offset = 0 if kind in UPPER_TYPES else len(COLOUR_NAMES)
        vector[offset + COLOUR_NAMES.index(colour)] = 1.0
    return vector


class OutfitModel(nn.Module):
    """A fabricated retrieval model whose answer is known: an image maps to its identity's garment colours
    (looked up by its exact preprocessed pixels), a text to the garment colours it names."""

    def __init__(self, images: torch.Tensor, vectors: torch.Tensor):
        super().__init__()
        self.images, self.vectors = images.flatten(1), vectors
        self.images_encoded = 0

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        self.images_encoded += len(images)
        nearest = torch.cdist(images.flatten(1), self.images).argmin(dim=1)
        return self.vectors[nearest]

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        tok = get_tokenizer()
        texts = [tok.decode([i for i in row.tolist() if i not in (0, tok.sot_id, tok.eot_id)]) for row in ids]
        return torch.stack([outfit_vector(t) for t in texts])


def toy_test_split(root: Path) -> tuple[Path, dict[str, int], dict[int, list[str]]]:
    """The toy CUHK-PEDES test images: (image folder, {relative path: pid}, {pid: captions})."""
    dataset = make_toy_dataset(root, "CUHK-PEDES", num_train_ids=2, num_val_ids=1, num_test_ids=6,
                               images_per_id=2, image_size=[64, 32], seed=3)
    records = [r for r in json.loads((dataset / "reid_raw.json").read_text()) if r["split"] == "test"]
    pid_of = {r["file_path"]: r["id"] for r in records}
    captions: dict[int, list[str]] = {}
    for r in records:
        captions.setdefault(r["id"], []).extend(r["captions"])
    return dataset / "imgs", pid_of, captions


def outfit_model(gallery: Path, pid_of: dict[str, int], captions: dict[int, list[str]], cfg) -> OutfitModel:
    transform = build_transform(cfg, train=False)
    paths = sorted(pid_of)
    images = torch.stack([transform(Image.open(gallery / p).convert("RGB")) for p in paths])
    return OutfitModel(images, torch.stack([outfit_vector(captions[pid_of[p]][0]) for p in paths]))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return toy_test_split(tmp_path_factory.mktemp("toy"))


@pytest.fixture
def gallery(toy, tmp_path) -> Path:
    """A private copy of the toy test images (tests modify it)."""
    images, pid_of, _ = toy
    target = tmp_path / "gallery"
    for rel in pid_of:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        (target / rel).write_bytes((images / rel).read_bytes())
    return target


@pytest.fixture
def cfg():
    return load_config(DEMO, TINY)


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    path = tmp_path / "best.pth"
    path.write_bytes(b"weights v1")
    return path


def _index(model, gallery: Path, cfg, checkpoint: Path) -> search.GalleryIndex:
    key = search.encoder_key(cfg, checkpoint, "none")
    return search.build_gallery_index(model, gallery, cfg, torch.device("cpu"), "none", key,
                                      search.default_cache_path(gallery))


def test_toy_captions_find_their_identity_first(toy, gallery, cfg, checkpoint):
    _, pid_of, captions = toy
    model = outfit_model(gallery, pid_of, captions, cfg)
    index = _index(model, gallery, cfg, checkpoint)
    assert index.paths == sorted(pid_of) and not index.skipped
    for pid, texts in captions.items():
        colours = outfit_vector(texts[0]).nonzero().flatten().tolist()
        typed = (f"a woman in a {COLOUR_NAMES[colours[0]]} coat and "
                 f"{COLOUR_NAMES[colours[1] - len(COLOUR_NAMES)]} pants")
        queries = texts + [typed]
        scores, order = search.rank(search.encode_queries(model, queries, cfg, torch.device("cpu"), "none"),
                                    index.features, topk=2)
        for row in order:
            assert [pid_of[index.paths[i]] for i in row.tolist()] == [pid, pid]  # both images of the identity
        assert torch.allclose(scores[:, 0], torch.ones(len(queries)))


def test_rank_matches_a_stable_sort_by_hand():
    generator = torch.Generator().manual_seed(0)
    queries = F.normalize(torch.randn(5, 8, generator=generator), dim=-1)
    gallery = F.normalize(torch.randn(30, 8, generator=generator), dim=-1)
    gallery[7] = gallery[3]  # a tie: the earlier file must come first
    scores, order = search.rank(queries, gallery, topk=6)
    for q in range(5):
        by_hand = sorted(range(30), key=lambda g: -float(queries[q] @ gallery[g]))[:6]
        assert order[q].tolist() == by_hand
        assert scores[q].tolist() == pytest.approx([float(queries[q] @ gallery[g]) for g in by_hand], abs=1e-6)
    tied = search.rank(gallery[3:4], gallery, topk=2)[1][0].tolist()
    assert tied == [3, 7]


def test_cache_is_reused_and_invalidated(toy, gallery, cfg, checkpoint):
    _, pid_of, captions = toy
    model = outfit_model(gallery, pid_of, captions, cfg)
    n = len(pid_of)
    first = _index(model, gallery, cfg, checkpoint)
    cache = search.default_cache_path(gallery)
    assert first.encoded == n and model.images_encoded == n and cache.is_file()
    assert cache.parent == gallery.parent  # next to the gallery, not inside it

    again = _index(model, gallery, cfg, checkpoint)  # nothing changed: no image is encoded
    assert again.encoded == 0 and model.images_encoded == n
    assert again.paths == first.paths and torch.equal(again.features, first.features)

    # One file replaced by a picture of another identity: only it is re-encoded, and its embedding follows.
    a, b = sorted(pid_of)[0], sorted(pid_of)[-1]
    assert pid_of[a] != pid_of[b]
    (gallery / a).write_bytes((gallery / b).read_bytes())
    os.utime(gallery / a, ns=(1, 1))  # a different modification time even on coarse-clock file systems
    changed = _index(model, gallery, cfg, checkpoint)
    assert changed.encoded == 1 and model.images_encoded == n + 1
    assert torch.equal(changed.features[changed.paths.index(a)], first.features[first.paths.index(b)])

    (gallery / b).unlink()  # a removed file leaves the index (and the cache)
    removed = _index(model, gallery, cfg, checkpoint)
    assert removed.encoded == 0 and b not in removed.paths and len(removed.paths) == n - 1
    assert b not in torch.load(cache, weights_only=True)["paths"]

    checkpoint.write_bytes(b"weights v2, retrained")  # another checkpoint: everything is encoded again
    assert _index(model, gallery, cfg, checkpoint).encoded == n - 1

    other = load_config(DEMO, {**TINY, "img_size": [64, 32]})
    assert search.encoder_key(other, checkpoint, "none") != search.encoder_key(cfg, checkpoint, "none")
    assert search.encoder_key(cfg, checkpoint, "fp16") != search.encoder_key(cfg, checkpoint, "none")


def test_torn_cache_file_is_rebuilt_with_a_warning(toy, gallery, cfg, checkpoint, caplog):
    _, pid_of, captions = toy
    model = outfit_model(gallery, pid_of, captions, cfg)
    search.default_cache_path(gallery).write_bytes(b"PK\x03\x04 half a file")
    with caplog.at_level(logging.WARNING):
        index = _index(model, gallery, cfg, checkpoint)
    assert index.encoded == len(pid_of)
    assert "ignoring unreadable gallery cache" in caplog.text
    assert _index(model, gallery, cfg, checkpoint).encoded == 0  # and the rebuilt cache works


def test_unreadable_images_are_skipped_with_a_warning(toy, gallery, cfg, checkpoint, caplog):
    _, pid_of, captions = toy
    model = outfit_model(gallery, pid_of, captions, cfg)
    (gallery / "broken.jpg").write_bytes(b"this is not a JPEG")
    good = gallery / sorted(pid_of)[0]
    (gallery / "truncated.PNG").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (gallery / "notes.txt").write_text("not an image extension: ignored")
    with caplog.at_level(logging.WARNING):
        index = _index(model, gallery, cfg, checkpoint)
    assert index.paths == sorted(pid_of)
    assert len(index.skipped) == 2
    for name in ("broken.jpg", "truncated.PNG"):
        assert any(name in s for s in index.skipped)
        assert name in caplog.text


def test_a_gallery_without_readable_images_is_an_error(tmp_path, cfg, checkpoint):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(search.SearchError, match="no image files"):
        search.list_gallery(empty)
    (empty / "bad.png").write_bytes(b"garbage")
    with pytest.raises(search.SearchError, match="none of its 1 image files could be read"):
        _index(OutfitModel(torch.zeros(1, 3 * 32 * 16), torch.zeros(1, 4)), empty, cfg, checkpoint)
    with pytest.raises(search.SearchError, match="missing: no such folder"):
        search.list_gallery(tmp_path / "missing")
    with pytest.raises(search.SearchError, match="bad.png: not a folder"):
        search.list_gallery(empty / "bad.png")


def test_output_names_and_query_file(tmp_path):
    assert search.output_paths(Path("out/r.png"), 1) == [Path("out/r.png")]
    assert search.output_paths(Path("r.png"), 12)[0] == Path("r_01.png")
    assert search.output_paths(Path("r.png"), 12)[-1] == Path("r_12.png")
    queries = tmp_path / "q.txt"
    queries.write_text("red coat\n\n  blue jeans  \n")
    args = search.parse_args(["--config_file", "c", "--gallery", "g", "--query", "a hat", "--queries",
                              str(queries)])[0]
    assert search.read_queries(args) == ["a hat", "red coat", "blue jeans"]
    with pytest.raises(search.SearchError, match="no query"):
        search.read_queries(search.parse_args(["--config_file", "c", "--gallery", "g"])[0])
    queries.write_bytes("café au lait\n".encode("latin-1"))
    with pytest.raises(search.SearchError, match=r"--queries .*q.txt: not UTF-8 text .* save it as UTF-8"):
        search.read_queries(args)


def test_command_line_with_a_trained_model_layout(toy, gallery, cfg, tmp_path, capsys):
    """A real (tiny, randomly initialised) CLIP saved as a training checkpoint: the printed ranking equals a
    brute-force per-image computation, and one PNG of the expected size is written per query."""
    run = tmp_path / "run"
    save_config(cfg, run / "configs.yaml")
    torch.manual_seed(0)
    model = build_retrieval_model(cfg).eval()
    save_checkpoint({"model": {f"backbone.{k}": v for k, v in model.state_dict().items()}, "epoch": 3},
                    run / "best.pth")
    queries = ["a man in a red jacket and blue jeans", "a woman with long black hair and a white skirt"]
    written = search.main(["--config_file", str(run / "configs.yaml"), "--gallery", str(gallery),
                           "--query", queries[0], "--query", queries[1], "--topk", "3",
                           "--out", str(tmp_path / "res.png")])
    assert written == [tmp_path / "res_1.png", tmp_path / "res_2.png"]
    printed = capsys.readouterr().out

    transform, tok = build_transform(cfg, train=False), get_tokenizer()
    with torch.no_grad():
        paths = sorted(p.relative_to(gallery).as_posix() for p in gallery.rglob("*.png"))
        images = {p: F.normalize(model.encode_image(transform(Image.open(gallery / p).convert("RGB"))[None]), dim=-1)
                  for p in paths}
        for query, block in zip(queries, printed.split("query: ")[1:]):
            text = F.normalize(model.encode_text(tok(query, cfg.text_length)[None]), dim=-1)
            reference = sorted(((float(text @ f.t()), p) for p, f in images.items()), reverse=True)
            rows = re.findall(r"\|\s+(\d+)\s+\|\s+([-\d.]+)\s+\|\s+(\S+)\s+\|", block)
            assert [int(r[0]) for r in rows] == [1, 2, 3]
            scores = [float(r[1]) for r in rows]
            assert scores == sorted(scores, reverse=True)
            by_path = {p: s for s, p in reference}
            for _, score, path in rows:
                assert float(score) == pytest.approx(by_path[Path(path).relative_to(gallery).as_posix()], abs=1e-3)
            assert scores[-1] >= reference[3][0] - 1e-3  # nothing better was left out

    layout = GridLayout(label_lines=2)
    cell_w = layout.tile_size[1] + 2 * layout.frame
    cell_h = layout.tile_size[0] + 2 * layout.frame + 2 * layout.line_height
    expected = (layout.margin + 3 * (cell_w + layout.margin),
                layout.margin + layout.header_lines * layout.line_height + layout.margin + cell_h + layout.margin)
    for path in written:
        with Image.open(path) as picture:
            assert picture.format == "PNG" and picture.size == expected


def test_a_cache_that_cannot_be_written_only_warns(toy, gallery, cfg, checkpoint, tmp_path, caplog):
    _, pid_of, captions = toy
    model = outfit_model(gallery, pid_of, captions, cfg)
    blocker = tmp_path / "a file"
    blocker.write_text("the cache's folder would have to be here")
    key = search.encoder_key(cfg, checkpoint, "none")
    with caplog.at_level(logging.WARNING):
        index = search.build_gallery_index(model, gallery, cfg, torch.device("cpu"), "none", key,
                                           blocker / "cache.pt")
    assert index.paths == sorted(pid_of)
    assert "could not write the gallery cache" in caplog.text and "--cache" in caplog.text


def test_long_queries_are_truncated_with_a_warning(cfg, caplog):
    tok = get_tokenizer()
    short = "a man in a red jacket"
    long = " ".join(["a woman in a beige coat with a green bag"] * 8)
    length = len(tok.encode(long)) + 2  # with the start and end marks
    assert length > cfg.text_length
    with caplog.at_level(logging.WARNING):
        ids = tokenize_queries([short, long], cfg.text_length)
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]  # for the long query only
    message = record.getMessage()
    assert "query truncated" in message and f"has {length} tokens" in message
    assert f"the {cfg.text_length} the model reads (text_length)" in message
    assert f"its last {length - cfg.text_length} are dropped" in message
    assert torch.equal(ids[0], tok(short, cfg.text_length)) and torch.equal(ids[1], tok(long, cfg.text_length))
    assert int(ids[1, -1]) == tok.eot_id  # truncation keeps the end mark


def test_a_toy_trained_run_gets_a_note_with_a_query_in_the_toys_pattern(toy, cfg, tmp_path):
    images, _, _ = toy
    cfg.root_dir = str(images.parent.parent)  # the toy test split's root: <root>/CUHK-PEDES/imgs
    note = search.toy_note(cfg)
    assert note.startswith("note: this run was trained on the toy dataset") and "\n" not in note
    query = note.split('--query "')[1].rstrip('"')
    assert query == example_caption(random.Random(cfg.seed))  # made by the toy's generator, the run's seed
    # the toy's pattern: 'The <subject> <verb> <phrase>, ...' with each phrase in toy colours
    assert query.split()[:2] in [["The", subject] for subject in SUBJECTS] and query.endswith(".")
    verbs = "|".join(PART_VERBS.values())
    phrases = re.findall(rf"\b(?:{verbs}) (?:an? )?(?:long |short )?(\w+)", query)
    assert len(phrases) >= 4 and set(phrases) <= set(COLOUR_NAMES)  # hair, upper, lower, shoes (+ accessory)
    assert outfit_vector(query).sum() == 2  # one upper and one lower garment
    cfg.root_dir = str(tmp_path)  # no toy dataset there (another benchmark, or none): no note
    assert search.toy_note(cfg) is None
