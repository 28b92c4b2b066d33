"""Toy dataset: CLI + readers for every format, determinism, and that identities are distinguishable."""
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets import read_benchmark
from datasets.phrases import extract_phrases
from datasets.toy import (
    COLOURS,
    HAIR_COLOURS,
    LIGHTING,
    REGION_PARTS,
    decode_labels,
    encode_labels,
    make_outfits,
    part_phrases,
    read_regions,
    render_with_regions,
    visible_phrases,
)
from tests.conftest import TOY_SIZES
from tools.make_toy_dataset import main as make_toy_cli

FILES = {"CUHK-PEDES": "reid_raw.json", "ICFG-PEDES": "ICFG-PEDES.json", "RSTPReid": "data_captions.json"}


def cli_args(root, name, seed=3):
    args = ["--root_dir", str(root), "--dataset_name", name]
    for key in ("num_train_ids", "num_val_ids", "num_test_ids", "images_per_id"):
        args += [f"--{key}", str(TOY_SIZES[key])]
    return args + ["--image_size", "32", "16", "--seed", str(seed)]


@pytest.mark.parametrize("name", list(FILES))
def test_cli_then_readers(tmp_path, name):
    folder = make_toy_cli(cli_args(tmp_path, name))
    data = read_benchmark(name, tmp_path, need_phrases=True)
    per_image = 1 if name == "ICFG-PEDES" else 2
    assert data.num_classes == 12 and len(data.train) == 12 * 2 * per_image
    assert set(data.eval_splits) == ({"test"} if name == "ICFG-PEDES" else {"val", "test"})
    assert len(data.eval_splits["test"].img_paths) == 5 * 2
    with Image.open(data.train[0].img_path) as img:
        assert img.size == (16, 32) and img.format == "PNG"
    assert all(s.phrases for s in data.train)
    records = json.loads((folder / FILES[name]).read_text())
    expected = {"id", "img_path", "captions", "split"} if name == "RSTPReid" else \
        {"split", "captions", "file_path", "processed_tokens", "id"}
    assert all(set(r) == expected for r in records)
    assert min(r["id"] for r in records) == 1


def test_deterministic_given_seed(tmp_path):
    a = make_toy_cli(cli_args(tmp_path / "a", "RSTPReid"))
    b = make_toy_cli(cli_args(tmp_path / "b", "RSTPReid"))
    c = make_toy_cli(cli_args(tmp_path / "c", "RSTPReid", seed=4))
    assert (a / FILES["RSTPReid"]).read_text() == (b / FILES["RSTPReid"]).read_text()
    first = json.loads((a / FILES["RSTPReid"]).read_text())[5]["img_path"]
    assert (a / "imgs" / first).read_bytes() == (b / "imgs" / first).read_bytes()
    assert (a / "imgs" / first).read_bytes() != (c / "imgs" / first).read_bytes()


def test_colour_words_are_single_tokens(tokenizer):
    for word in list(COLOURS) + list(HAIR_COLOURS):
        assert len(tokenizer.encode(word)) == 1, word


def outfit_colours(caption: str) -> tuple[str, ...]:
    """The colour words of a caption, in order of first mention."""
    words = caption.lower().replace(",", " ").replace(".", " ").split()
    return tuple(dict.fromkeys(w for w in words if w in COLOURS))


def test_test_identities_differ_in_garment_colours(toy_root):
    data = read_benchmark("CUHK-PEDES", toy_root)
    test = data.eval_splits["test"]
    colour_sets = {}
    for caption, pid in zip(test.captions, test.caption_pids):
        colour_sets.setdefault(pid, set()).add(frozenset(outfit_colours(caption)))
    # the upper and lower colours of an identity appear in every caption of it
    shared = {pid: frozenset.intersection(*sets) for pid, sets in colour_sets.items()}
    assert all(len(s) >= 2 for s in shared.values())
    assert len(set(shared.values())) == len(shared)


def region_colours(path: str) -> np.ndarray:
    """Mean colour of horizontal bands: a crude, training-free picture descriptor."""
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    bands = np.array_split(pixels[:, pixels.shape[1] // 4: -pixels.shape[1] // 4], 8, axis=0)
    return np.concatenate([b.reshape(-1, 3).mean(0) for b in bands])


def test_identities_are_recognisable_from_pictures(tmp_path):
    make_toy_cli(["--root_dir", str(tmp_path), "--dataset_name", "ICFG-PEDES", "--num_train_ids", "2",
                  "--num_test_ids", "40", "--images_per_id", "3"])
    test = read_benchmark("ICFG-PEDES", tmp_path).eval_splits["test"]
    feats = np.stack([region_colours(p) for p in test.img_paths])
    pids = np.array(test.image_pids)
    dist = ((feats[:, None] - feats[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    rank1 = (pids[dist.argmin(1)] == pids).mean()
    assert rank1 >= 0.5, rank1  # chance is 2 / 119


def test_region_labels_round_trip():
    labels = np.array([[0, 0, 3], [3, 3, 1]], dtype=np.uint8)
    code = encode_labels(labels)
    assert code == [0, 2, 3, 3, 1, 1]  # value, run length, ... in row-major order (by hand)
    assert np.array_equal(decode_labels(code, labels.shape), labels)


def _nearest_colour(rgb: np.ndarray) -> str:
    """The named colour closest to ``rgb`` under any global brightness of the generator's lighting range."""
    factors = np.linspace(*LIGHTING, 10)
    return min(COLOURS, key=lambda c: min(np.abs(np.array(COLOURS[c]) * f - rgb).sum() for f in factors))


def test_regions_mark_the_pixels_painted_in_each_part_colour():
    """Each part's labelled pixels have the colour its phrase names (an independent check from the pixels)."""
    rng = random.Random(7)
    for outfit in make_outfits(12, [("red", "blue"), ("green", "white"), ("black", "yellow")], rng):
        img, labels = render_with_regions(outfit, (128, 48), rng)
        pixels = np.asarray(img, dtype=np.float32)
        visible = visible_phrases(outfit, labels)
        hidden_hair = outfit.accessory == "hat" and not outfit.long_hair  # the hat is drawn instead of short hair
        assert set(part_phrases(outfit)) - set(visible) == ({"hair"} if hidden_hair else set())
        for part, phrase in visible.items():
            on = labels == REGION_PARTS.index(part) + 1
            colour = next(w for w in phrase.split() if w in COLOURS)
            assert _nearest_colour(np.median(pixels[on], axis=0)) == colour, (part, phrase)


def test_regions_file_covers_every_image(toy_root):
    for name in FILES:
        regions = read_regions(toy_root / name)
        data = read_benchmark(name, toy_root)
        paths = [s.img_path for s in data.train] + [p for split in data.eval_splits.values() for p in split.img_paths]
        keys = {Path(p).relative_to(toy_root / name).as_posix() for p in paths}
        assert keys == set(regions["images"])


def test_captions_name_each_visible_part_after_its_own_verb(toy_root):
    """What the AQA questions rely on: the extracted phrases are exactly the picture's visible parts, and each
    phrase follows its part's verb, so a masked phrase's left context says which part it is (docs/experiments/demo.md
    point 11)."""
    regions = read_regions(toy_root / "CUHK-PEDES")["images"]
    verbs = {"hair": "has", "upper": "is dressed in", "lower": "is wearing", "shoes": "walks in",
             "backpack": "carries", "bag": "holds", "hat": "wears"}
    for record in json.loads((toy_root / "CUHK-PEDES" / FILES["CUHK-PEDES"]).read_text()):
        visible = regions[f"imgs/{record['file_path']}"]["phrases"]
        for text in record["captions"]:
            assert sorted(extract_phrases(text)) == sorted(visible.values()), text
            for part, phrase in visible.items():
                assert re.search(rf"\b{verbs[part]} (an? )?{re.escape(phrase)}\b", text), (part, text)
