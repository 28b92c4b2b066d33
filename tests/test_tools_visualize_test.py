"""tools/visualize_test.py: query choice, first-correct rank, and framed PNGs on the toy test split."""
from __future__ import annotations

import re

import pytest
import torch
from PIL import Image

from datasets.bases import DatasetError
from datasets.toy import make_toy_dataset
from datasets.transforms import build_transform
from tests.test_tools_search import TINY, OutfitModel, outfit_vector
from tests.tiny_run import DEMO
from tools import visualize_test
from utils.config import load_config, save_config
from utils.visualize import GridLayout

GREEN, RED = (0, 170, 0), (210, 0, 0)


def test_queries_are_spread_over_the_captions():
    assert visualize_test.pick_queries(5, 8) == [0, 1, 2, 3, 4]
    for n, count in [(10, 3), (100, 8), (7, 2)]:
        picked = visualize_test.pick_queries(n, count)
        assert picked[0] == 0 and picked[-1] == n - 1 and len(picked) == count
        assert picked == sorted(set(picked))
    assert visualize_test.pick_queries(9, 1) == [0]


@pytest.mark.parametrize("names", [list(range(7)), [10**12, -3, 0, -(10**15), 2**40, 7, 10**12 + 1]])
def test_first_hit_rank_matches_a_loop(names):
    names = torch.tensor(names)  # identity k is called names[k]: any integers work
    generator = torch.Generator().manual_seed(1)
    g_pids = names[torch.randint(0, 6, (40,), generator=generator)]
    for _ in range(20):
        scores = torch.randn(40, generator=generator).round(decimals=1)  # rounding makes ties
        pid = int(names[torch.randint(0, 7, (1,), generator=generator)])
        order = sorted(range(40), key=lambda g: -float(scores[g]))  # stable: ties in gallery order
        expected = next((r + 1 for r, g in enumerate(order) if int(g_pids[g]) == pid), None)
        assert visualize_test.first_hit_rank(scores, g_pids, pid) == expected


@pytest.fixture
def run_on_toy(tmp_path, monkeypatch):
    """A run folder whose config points at a toy dataset, and a fabricated model that knows its outfits."""
    make_toy_dataset(tmp_path / "toy", "CUHK-PEDES", num_train_ids=2, num_val_ids=1, num_test_ids=5,
                     images_per_id=2, image_size=[64, 32], seed=5)
    cfg = load_config(DEMO, {**TINY, "root_dir": str(tmp_path / "toy")})
    run = tmp_path / "run"
    save_config(cfg, run / "configs.yaml")
    eval_set = visualize_test.load_test_split(cfg)
    transform = build_transform(cfg, train=False)
    caption_of = {}
    for pid, caption in zip(eval_set.q_pids.tolist(), eval_set.captions):
        caption_of.setdefault(pid, caption)
    images = torch.stack([transform(Image.open(p).convert("RGB")) for p in eval_set.img_paths])
    vectors = torch.stack([outfit_vector(caption_of[pid]) for pid in eval_set.g_pids.tolist()])
    model = OutfitModel(images, vectors)
    monkeypatch.setattr(visualize_test, "load_retrieval_model", lambda *args: model)
    return run, eval_set, vectors


def test_pictures_frame_the_queried_identity_green(run_on_toy, capsys):
    run, eval_set, vectors = run_on_toy
    written = visualize_test.main(["--config_file", str(run / "configs.yaml"), "--num_queries", "4",
                                   "--topk", "5"])
    assert len(written) == 4 and all(p.parent == run / "test_queries" for p in written)
    printed = capsys.readouterr().out
    layout = GridLayout()
    cell_w = layout.tile_size[1] + 2 * layout.frame
    cell_h = layout.tile_size[0] + 2 * layout.frame + 2 * layout.line_height
    header = layout.margin + layout.header_lines * layout.line_height
    for path in written:
        index = int(re.fullmatch(r"query_(\d+)\.png", path.name).group(1))
        pid = int(eval_set.q_pids[index])
        query = outfit_vector(eval_set.captions[index])
        scores = [float(query @ v) / float(query.norm() * v.norm()) for v in vectors]
        top = sorted(range(len(scores)), key=lambda g: -scores[g])[:5]
        assert re.search(rf"\|\s+{index}\s+\|\s+{pid}\s+\|\s+1\s+\|", printed)  # the outfit model is never wrong
        with Image.open(path) as picture:
            picture = picture.convert("RGB")
            assert picture.size == (layout.margin + 5 * (cell_w + layout.margin),
                                    header + layout.margin + cell_h + layout.margin)
            for k, g in enumerate(top):
                corner = (layout.margin + k * (cell_w + layout.margin), header + layout.margin)
                expected = GREEN if int(eval_set.g_pids[g]) == pid else RED
                assert picture.getpixel(corner) == expected, (path.name, k)


def test_a_run_without_test_split_is_a_clear_error(tmp_path):
    make_toy_dataset(tmp_path / "toy", "CUHK-PEDES", num_train_ids=2, num_val_ids=1, num_test_ids=0,
                     images_per_id=1, image_size=[32, 16], seed=0)
    cfg = load_config(DEMO, {**TINY, "root_dir": str(tmp_path / "toy")})
    with pytest.raises(DatasetError, match="no record has split 'test'"):
        visualize_test.load_test_split(cfg)

