"""Synthetic toy benchmark: pedestrian-like PNG figures in named colours, captions naming them.

Each identity has a fixed outfit (hair, upper garment, lower garment, shoes, optional bag or hat) in
colours that CLIP's BPE keeps as one token; its images jitter pose, scale, position, background and
lighting. Each caption names the parts its picture shows, head to feet, each phrase after its part's own verb.
The files follow the chosen benchmark's exact layout and JSON (method §2), so the real readers load them. Within a
split no two identities share the (upper, lower) colour pair, so retrieval is learnable. The generator knows
where it paints each garment: ``toy_regions.json`` beside the annotation records, per image, the phrase naming
each part and a label map of the visible pixels of each part (the pointing game of tools/visualize_grounding.py).
"""
from __future__ import annotations

import itertools
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from datasets.bases import IMAGE_DIR, DatasetError, get_benchmark
from utils.io import atomic_write_text

# Named colours (one CLIP BPE token each) and their RGB values.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 30), "blue": (30, 60, 200), "green": (30, 150, 40), "yellow": (235, 210, 40),
    "black": (20, 20, 20), "white": (240, 240, 240), "orange": (245, 130, 20), "purple": (120, 40, 160),
    "pink": (245, 150, 190), "gray": (128, 128, 128), "brown": (110, 65, 25),
}
HAIR_COLOURS = ("black", "brown", "yellow", "gray", "white", "red")
SKIN_TONES = ((235, 200, 170), (200, 150, 110), (150, 100, 70), (100, 70, 50))
UPPER_TYPES = ("shirt", "jacket", "coat", "sweater", "hoodie", "t-shirt")
LOWER_TYPES = ("pants", "jeans", "shorts", "skirt")  # shorts and skirt leave the lower legs bare
SHORT_LOWER = ("shorts", "skirt")
SHOE_TYPES = ("shoes", "boots", "sneakers")
ACCESSORIES = ("none", "backpack", "bag", "hat")
SUBJECTS = ("man", "woman", "person")
PRONOUNS = {"man": "He", "woman": "She", "person": "The person"}  # the second sentence's subject
# Each part has its own verb before its phrase ("walks in" only shoes): the text tower is causal, so the masked
# positions of an AQA question (method §6.1) see only the words on their left, and this tells them which part they
# stand for (docs/experiments/demo.md point 11).
PART_VERBS = {"hair": "has", "upper": "is dressed in", "lower": "is wearing", "shoes": "walks in",
              "backpack": "carries", "bag": "holds", "hat": "wears"}
CAPTIONS_PER_IMAGE = {"CUHK-PEDES": 2, "ICFG-PEDES": 1, "RSTPReid": 2, "custom": 2}  # as in the benchmarks (method §2)
# The custom layout (datasets/custom.py): <root_dir>/custom/annotations.json with images/ beside it.
CUSTOM_ANNOTATION = "annotations.json"
CUSTOM_IMAGE_DIR = "images"
# Side file of garment regions, beside the annotation; its label maps number pixels by REGION_PARTS (0: other).
REGIONS_FILE = "toy_regions.json"
REGION_PARTS = ("hair", "upper", "lower", "shoes", "backpack", "bag", "hat")
OTHER = 0  # background and skin
PARTIAL = ".partial-"  # a dataset being written: <root_dir>/.<dataset_name>.partial-<pid>/<dataset_name>/

# Body layout as fractions of the figure height (top to bottom) and of the image width.
HEAD = (0.0, 0.16)  # a head (and hair, hat) of about one 8x8 patch at the demo's 64x32 input
TORSO = (0.14, 0.52)
SHORT_END = 0.68  # hem of shorts and skirts
LEGS_END = 0.90  # shoes below: about a patch row at the demo's input
SHOES_END = 1.0
TORSO_WIDTH = 0.46
HEAD_WIDTH = 0.32
ARM_WIDTH = 0.11
LEG_WIDTH = 0.17
LONG_HAIR_END = 0.30  # long hair falls to the shoulders
HAIR_MARGIN = 1  # pixels long hair sticks out beside the head
HAT = (-0.02, 0.07)  # hat crown, above the hair line
HAT_BRIM = 0.05  # of the width, beyond the head on each side
BACKPACK = (0.18, 0.44)  # visible beside the torso
BACKPACK_WIDTH = 1.5  # arm widths beyond the torso on each side
BAG = (0.40, 0.62)  # hand bag beside the hip
HAND = (0.50, 0.56)  # bare hands below the sleeves
LONG_HAIR_PROB = 0.5
IMAGE_FLIP_PROB = 0.5
# Jitter ranges.
FIGURE_HEIGHT = (0.82, 0.96)  # of the image height
SHIFT_X = 0.08  # of the image width, either way
LEG_SPREAD = (0.0, 0.08)  # extra leg distance, of the width
ARM_SWING = (-0.04, 0.04)  # vertical arm offset, of the height
COLOUR_JITTER = 18  # per-channel garment colour noise
LIGHTING = (0.75, 1.2)  # global brightness factor
PIXEL_NOISE = 6.0  # std of per-pixel noise
BACKGROUND_RANGE = (60, 200)  # muted background tones
CLUTTER_BOXES = 3  # random background rectangles


@dataclass(frozen=True)
class Outfit:
    """The visible attributes of one identity."""

    subject: str
    hair: str
    long_hair: bool
    skin: tuple[int, int, int]
    upper: str
    upper_type: str
    lower: str
    lower_type: str
    shoes: str
    shoe_type: str
    accessory: str
    accessory_colour: str


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _with_article(phrase: str) -> str:
    """'a red coat', 'blue jeans' (plural garments take no article)."""
    return phrase if phrase.endswith("s") else f"{_article(phrase)} {phrase}"


def part_phrases(outfit: Outfit) -> dict[str, str]:
    """The phrase that names each visible part of ``outfit`` in its captions (without article), by part."""
    o = outfit
    phrases = {"hair": f"{'long' if o.long_hair else 'short'} {o.hair} hair", "upper": f"{o.upper} {o.upper_type}",
               "lower": f"{o.lower} {o.lower_type}", "shoes": f"{o.shoes} {o.shoe_type}"}
    if o.accessory != "none":
        phrases[o.accessory] = f"{o.accessory_colour} {o.accessory}"
    return phrases


def visible_phrases(outfit: Outfit, labels: np.ndarray) -> dict[str, str]:
    """part_phrases of the parts with pixels in ``labels`` (a hat hides short hair; tiny images lose parts)."""
    present = set(np.unique(labels).tolist())
    return {part: phrase for part, phrase in part_phrases(outfit).items() if REGION_PARTS.index(part) + 1 in present}


def _join(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def caption(outfit: Outfit, visible: dict[str, str], rng: random.Random) -> str:
    """One description of the parts a picture of ``outfit`` shows (``visible``: visible_phrases), head to feet
    then the accessory, over one or two sentences (split at random), each phrase after its part's verb."""
    verbs = [f"{PART_VERBS[part]} {phrase if part == 'hair' else _with_article(phrase)}"
             for part, phrase in visible.items()]
    split = rng.randint(1, len(verbs))
    text = f"The {outfit.subject} {_join(verbs[:split])}."
    return f"{text} {PRONOUNS[outfit.subject]} {_join(verbs[split:])}." if verbs[split:] else text


def example_caption(rng: random.Random) -> str:
    """A caption in the toy's sentence pattern, of a random outfit with every part named: a query that a model
    trained on the toy understands (it has read no other sentences)."""
    (outfit,) = make_outfits(1, _colour_pairs(rng), rng)
    return caption(outfit, part_phrases(outfit), rng)


def is_toy_dataset(dataset_dir: str | Path) -> bool:
    """Whether ``dataset_dir`` was written by this generator (it holds REGIONS_FILE)."""
    return (Path(dataset_dir) / REGIONS_FILE).is_file()


def make_outfits(n: int, colour_pairs: list[tuple[str, str]], rng: random.Random) -> list[Outfit]:
    """``n`` outfits whose (upper, lower) colours run through ``colour_pairs`` (distinct for n <= len)."""
    outfits = []
    for i in range(n):
        upper, lower = colour_pairs[i % len(colour_pairs)]
        subject = rng.choice(SUBJECTS)
        lower_type = rng.choice([t for t in LOWER_TYPES if subject != "man" or t != "skirt"])
        accessory = rng.choice(ACCESSORIES)
        outfits.append(Outfit(
            subject=subject, hair=rng.choice(HAIR_COLOURS), long_hair=rng.random() < LONG_HAIR_PROB,
            skin=rng.choice(SKIN_TONES), upper=upper, upper_type=rng.choice(UPPER_TYPES), lower=lower,
            lower_type=lower_type, shoes=rng.choice(list(COLOURS)), shoe_type=rng.choice(SHOE_TYPES),
            accessory=accessory, accessory_colour=rng.choice([c for c in COLOURS if c not in (upper, lower)])))
    return outfits


def _jitter(rgb: tuple[int, int, int], rng: random.Random) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.randint(-COLOUR_JITTER, COLOUR_JITTER), 0, 255)) for c in rgb)


def _background(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A muted vertical gradient with a few clutter boxes."""
    h, w = size
    top, bottom = (np.array([rng.randint(*BACKGROUND_RANGE) for _ in range(3)], dtype=np.float32) for _ in "tb")
    ramp = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    pixels = np.broadcast_to(top + (bottom - top) * ramp, (h, w, 3)).astype(np.uint8)
    img = Image.fromarray(pixels)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(0, CLUTTER_BOXES)):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        tone = tuple(rng.randint(*BACKGROUND_RANGE) for _ in range(3))
        draw.rectangle([x0, y0, x0 + rng.randrange(1, w // 2), y0 + rng.randrange(1, h // 4)], fill=tone)
    return img


class _Painter:
    """Paints shapes on the picture and, with the part's number, on a label map of the same size."""

    def __init__(self, img: Image.Image):
        self.draw = ImageDraw.Draw(img)
        self.labels = Image.new("L", img.size, OTHER)
        self.label_draw = ImageDraw.Draw(self.labels)

    def shape(self, kind: str, xy, rgb: tuple[int, int, int], part: str | None, *args) -> None:
        """``kind`` is an ImageDraw method (rectangle, polygon, ellipse, chord); ``part`` None paints OTHER."""
        getattr(self.draw, kind)(xy, *args, fill=rgb)
        getattr(self.label_draw, kind)(xy, *args, fill=REGION_PARTS.index(part) + 1 if part else OTHER)


def render_with_regions(outfit: Outfit, size: tuple[int, int], rng: random.Random) -> tuple[Image.Image, np.ndarray]:
    """One jittered picture of ``outfit`` at ``size`` (H, W) and its label map [H, W] (REGION_PARTS, 1-based)."""
    h, w = size
    img = _background(size, rng)
    paint = _Painter(img)
    fig_h = h * rng.uniform(*FIGURE_HEIGHT)
    top = rng.uniform(0, h - fig_h)
    cx = w / 2 + rng.uniform(-SHIFT_X, SHIFT_X) * w

    def y(frac: float) -> float:
        return top + frac * fig_h

    def box(x_half: float, y0: float, y1: float, colour: str | tuple, part: str | None, dx: float = 0.0) -> None:
        rgb = _jitter(COLOURS[colour], rng) if isinstance(colour, str) else colour
        paint.shape("rectangle", [cx + dx - x_half * w, y(y0), cx + dx + x_half * w, y(y1)], rgb, part)

    o = outfit
    skin = _jitter(o.skin, rng)
    torso_half, arm_off = TORSO_WIDTH / 2, TORSO_WIDTH / 2 + ARM_WIDTH / 2
    spread = rng.uniform(*LEG_SPREAD)
    leg_off = LEG_WIDTH / 2 + spread / 2
    for side in (-1, 1):  # legs, then the garment over them, then shoes
        box(LEG_WIDTH / 2, TORSO[1], LEGS_END, skin, None, side * leg_off * w)
        lower_end = SHORT_END if o.lower_type in SHORT_LOWER else LEGS_END
        if o.lower_type != "skirt":
            box(LEG_WIDTH / 2, TORSO[1], lower_end, o.lower, "lower", side * leg_off * w)
        box(LEG_WIDTH / 2 + spread / 4, LEGS_END, SHOES_END, o.shoes, "shoes", side * leg_off * w)
    if o.lower_type == "skirt":
        skirt = _jitter(COLOURS[o.lower], rng)
        paint.shape("polygon", [(cx - torso_half * w, y(TORSO[1])), (cx + torso_half * w, y(TORSO[1])),
                                (cx + (leg_off + LEG_WIDTH) * w, y(SHORT_END)),
                                (cx - (leg_off + LEG_WIDTH) * w, y(SHORT_END))], skirt, "lower")
    hair = _jitter(COLOURS[o.hair], rng)
    head = [cx - HEAD_WIDTH / 2 * w, y(HEAD[0]), cx + HEAD_WIDTH / 2 * w, y(HEAD[1])]
    if o.long_hair:  # behind the torso
        paint.shape("rectangle", [head[0] - HAIR_MARGIN, y(HEAD[1] / 2), head[2] + HAIR_MARGIN, y(LONG_HAIR_END)],
                    hair, "hair")
    if o.accessory == "backpack":
        box(torso_half + ARM_WIDTH * BACKPACK_WIDTH, *BACKPACK, o.accessory_colour, "backpack")
    box(torso_half, TORSO[0], TORSO[1], o.upper, "upper")
    for side in (-1, 1):
        swing = rng.uniform(*ARM_SWING)
        box(ARM_WIDTH / 2, TORSO[0] + swing, HAND[0] + swing, o.upper, "upper", side * arm_off * w)
        box(ARM_WIDTH / 2, HAND[0] + swing, HAND[1] + swing, skin, None, side * arm_off * w)
    if o.accessory == "bag":
        side = rng.choice((-1, 1))
        box(ARM_WIDTH, *BAG, o.accessory_colour, "bag", side * (arm_off + ARM_WIDTH) * w)
    paint.shape("ellipse", head, skin, None)
    if o.accessory == "hat":
        box(HEAD_WIDTH / 2 + HAT_BRIM, *HAT, o.accessory_colour, "hat")
    else:
        paint.shape("chord", head, hair, "hair", 180, 360)
    img, flipped = _light(img, rng)
    labels = np.asarray(paint.labels, dtype=np.uint8)
    return img, labels[:, ::-1].copy() if flipped else labels


def _light(img: Image.Image, rng: random.Random) -> tuple[Image.Image, bool]:
    """Global brightness change, a random flip and pixel noise; also whether the picture was flipped."""
    pixels = np.asarray(img, dtype=np.float32) * rng.uniform(*LIGHTING)
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, PIXEL_NOISE, pixels.shape)
    out = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
    flipped = rng.random() < IMAGE_FLIP_PROB
    return (out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flipped else out), flipped


def encode_labels(labels: np.ndarray) -> list[int]:
    """Run-length code of a label map in row-major order: value, count, value, count, ..."""
    flat = labels.ravel()
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    counts = np.diff(np.r_[starts, flat.size])
    return np.stack([flat[starts], counts], axis=1).ravel().tolist()


def decode_labels(code: list[int], size: tuple[int, int]) -> np.ndarray:
    """The label map [H, W] of encode_labels' code."""
    pairs = np.asarray(code, dtype=np.int64).reshape(-1, 2)
    return np.repeat(pairs[:, 0], pairs[:, 1]).astype(np.uint8).reshape(size)


def _colour_pairs(rng: random.Random) -> list[tuple[str, str]]:
    pairs = list(itertools.permutations(COLOURS, 2))
    rng.shuffle(pairs)
    return pairs


def _relative_path(dataset_name: str, split: str, pid: int, k: int) -> str:
    """Image path relative to imgs/, shaped like the benchmark's own names."""
    if dataset_name == "ICFG-PEDES":
        return f"{split}/{pid:04d}/{pid:04d}_{k:03d}.png"
    if dataset_name == "RSTPReid":
        return f"{pid:04d}_c{k}_{k:04d}.png"
    if dataset_name == "custom":
        return f"{CUSTOM_IMAGE_DIR}/{split}/{pid:04d}_{k:02d}.png"
    return f"toy/{pid:05d}{k:03d}.png"


def _record(dataset_name: str, split: str, pid: int, rel: str, captions: list[str]) -> dict:
    """One annotation record in the benchmark's JSON format (method §2)."""
    if dataset_name in ("RSTPReid", "custom"):
        return {"id": pid, "img_path": rel, "captions": captions, "split": split}
    # CUHK-PEDES and ICFG-PEDES also store each caption's lower-cased words.
    tokens = [[w.strip(".,").lower() for w in c.split()] for c in captions]
    return {"split": split, "captions": captions, "file_path": rel, "processed_tokens": tokens, "id": pid}


def make_toy_dataset(root_dir: str | Path, dataset_name: str, num_train_ids: int, num_val_ids: int,
                     num_test_ids: int, images_per_id: int, image_size: tuple[int, int] | list[int],
                     seed: int) -> Path:
    """Write ``<root_dir>/<dataset_name>/`` (imgs/, the annotation JSON and REGIONS_FILE); return that folder.

    Splits the benchmark lacks are skipped (ICFG-PEDES has no val split, method §2). ``custom`` writes the generic
    format of datasets/custom.py: ``annotations.json`` with image paths relative to its folder.
    """
    bench = get_benchmark(dataset_name)
    rng = random.Random(seed)
    dataset_dir = Path(root_dir) / dataset_name
    sizes = {"train": num_train_ids, "val": num_val_ids, "test": num_test_ids}
    sizes = {split: n for split, n in sizes.items() if split in bench.splits}
    records, regions, next_pid = [], {}, 1  # benchmark ids are 1-based
    for split, n in sizes.items():
        for outfit in make_outfits(n, _colour_pairs(rng), rng):
            for k in range(images_per_id):
                rel = _relative_path(dataset_name, split, next_pid, k)
                path = dataset_dir / (rel if dataset_name == "custom" else Path(IMAGE_DIR) / rel)
                path.parent.mkdir(parents=True, exist_ok=True)
                img, labels = render_with_regions(outfit, tuple(image_size), rng)
                img.save(path)
                visible = visible_phrases(outfit, labels)  # captions name what the picture shows
                regions[path.relative_to(dataset_dir).as_posix()] = {"phrases": visible,
                                                                      "labels": encode_labels(labels)}
                captions = [caption(outfit, visible, rng) for _ in range(CAPTIONS_PER_IMAGE[dataset_name])]
                records.append(_record(dataset_name, split, next_pid, rel, captions))
            next_pid += 1
    annotation = CUSTOM_ANNOTATION if dataset_name == "custom" else bench.annotation_files[0]
    atomic_write_text(dataset_dir / REGIONS_FILE, json.dumps(
        {"parts": list(REGION_PARTS), "image_size": list(image_size), "images": regions}))
    atomic_write_text(dataset_dir / annotation, json.dumps(records, indent=1))
    return dataset_dir


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def generate_once(root_dir: str | Path, dataset_name: str, **settings) -> bool:
    """make_toy_dataset into a private folder, renamed to ``<root_dir>/<dataset_name>`` once complete; returns
    whether this call made the dataset (False: it was there).

    Commands started together each write their own copy (the same files: one seed) and the first rename wins; a
    command killed half-way leaves only its hidden partial folder, which the next call removes.
    """
    root = Path(root_dir)
    target = root / dataset_name
    if target.exists():
        return False
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f".{dataset_name}{PARTIAL}*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    partial = root / f".{dataset_name}{PARTIAL}{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        made = make_toy_dataset(partial, dataset_name, **settings)
        try:
            os.rename(made, target)
        except OSError:  # another command renamed its copy first
            if not target.is_dir():
                raise
            return False
        return True
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def read_regions(dataset_dir: str | Path) -> dict | None:
    """The toy dataset's REGIONS_FILE in ``dataset_dir`` (None when absent: not a toy dataset)."""
    path = Path(dataset_dir) / REGIONS_FILE
    if not path.is_file():
        return None
    try:
        regions = json.loads(path.read_text(encoding="utf-8"))
        if list(regions["parts"]) != list(REGION_PARTS) or not isinstance(regions["images"], dict):
            raise ValueError(f"parts must be {list(REGION_PARTS)}")
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: not a region file of this generator ({exc}); regenerate the toy "
                           f"dataset") from exc
    return regions
