"""tools/visualize_grounding.py: the pointing game's scoring, the toy and real-data pictures, and wrong commands."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.toy import REGION_PARTS, REGIONS_FILE
from inference.grounding import Question, patches_on_part
from tests.cli_checks import REPO, assert_one_error_line
from tools import visualize_grounding
from tools.visualize_grounding import MAX_WIDTH
from utils.config import load_config
from utils.visualize import GridLayout, load_font, wrap_words

TOOL = str(REPO / "tools" / "visualize_grounding.py")


def test_patches_on_part_by_hand():
    labels = np.zeros((8, 4), dtype=np.uint8)  # an image twice the input size (4 x 2), 2 x 2 patches of 2 px
    labels[5, 3] = 2  # one pixel of part 2, in the input's patch (row 1, col 1)
    on = patches_on_part(labels, 2, grid=(2, 1), patch_size=2, stride=2, input_size=(4, 2))
    assert on.tolist() == [False, True]
    overlapping = patches_on_part(labels, 2, grid=(3, 1), patch_size=2, stride=1, input_size=(4, 2))
    assert overlapping.tolist() == [False, True, True]  # rows 1-2 and 2-3 of the input hold input row 2


def test_each_phrase_of_the_first_caption_is_drawn_once():
    same = "The man has short black hair and walks in red shoes."
    other = "The woman is dressed in a blue coat."
    questions = [Question(0, same, "short black hair", "hair"), Question(0, same, "red shoes", "shoes"),
                 Question(0, same, "short black hair", "hair"), Question(0, same, "red shoes", "shoes"),  # equal 2nd
                 Question(1, other, "blue coat", "upper"),  # image 1 is not shown
                 Question(2, other, "blue coat", "upper"), Question(2, same, "red shoes", "shoes")]  # 2nd caption
    first = {0: same, 2: other}
    assert visualize_grounding.first_caption_questions(questions, first) == [0, 1, 5]


def test_pointing_game_counts_peaks_on_the_part():
    cfg = load_config(None, {"img_size": [4, 4], "stride_size": 2, "backbone.patch_size": 2})
    labels = np.zeros((4, 4), dtype=np.uint8)
    labels[:2, :2] = REGION_PARTS.index("upper") + 1  # the top-left patch of 4
    questions = [Question(0, "c", "p", "upper"), Question(0, "c", "p", "upper")]
    maps = torch.zeros(2, 2, 2, 2)
    maps[0, -1, 0, 0] = 1.0  # combined map peaks on the part
    maps[1, -1, 1, 1] = 1.0  # off the part
    scores, hits = visualize_grounding.pointing_game(maps, questions, [labels], cfg, (2, 2))
    assert hits == [True, False]
    assert scores["pointing_accuracy"] == 0.5 and scores["chance"] == 0.25
    assert scores["per_type"] == {"upper": {"accuracy": 0.5, "chance": 0.25, "count": 2}}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, cwd=REPO)


def _expected_questions(cfg) -> int:
    """Caption mentions of each image's visible parts, counted from the annotation and the region file."""
    folder = Path(cfg.root_dir) / cfg.dataset_name
    regions = json.loads((folder / REGIONS_FILE).read_text())["images"]
    records = json.loads((folder / "reid_raw.json").read_text())
    return sum(sum(phrase in c.lower() for c in r["captions"] for phrase in regions[f"imgs/{r['file_path']}"]["phrases"]
                   .values()) for r in records if r["split"] == "test")


@pytest.mark.slow
def test_toy_run_scores_and_draws(demo_run, tmp_path):
    config = demo_run / "configs.yaml"
    out = tmp_path / "maps.png"
    result = _run("--config_file", str(config), "--json", "--num", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    scores = json.loads(result.stdout)
    assert set(scores) == {"pointing_accuracy", "chance", "per_type"}
    assert 0.0 <= scores["pointing_accuracy"] <= 1.0 and 0.0 < scores["chance"] < 1.0
    assert set(scores["per_type"]) <= set(REGION_PARTS)
    cfg = load_config(config)
    assert sum(s["count"] for s in scores["per_type"].values()) == _expected_questions(cfg)
    with Image.open(out) as img:  # the two examples side by side, a row per phrase: image, each layer, combined
        columns = len(cfg.sgiha.layers) + 2
        panel = GridLayout(columns=columns).canvas_size(columns)[0]
        assert img.size[0] == GridLayout().margin + 2 * (panel + GridLayout().margin) <= MAX_WIDTH


@pytest.mark.slow
def test_run_folder_and_bare_checkpoint_name_read_the_runs_files(demo_run, tmp_path):
    """--config_file takes the run folder, and --checkpoint last.pth names the run's file (as in the other tools):
    the same scores as the configs.yaml with the checkpoint's full path."""
    by_folder = _run("--config_file", str(demo_run), "--checkpoint", "last.pth", "--json", "--num", "1",
                     "--out", str(tmp_path / "a.png"))
    by_file = _run("--config_file", str(demo_run / "configs.yaml"), "--checkpoint", str(demo_run / "last.pth"),
                   "--json", "--num", "1", "--out", str(tmp_path / "b.png"))
    assert by_folder.returncode == 0, by_folder.stderr[-2000:]
    assert json.loads(by_folder.stdout) == json.loads(by_file.stdout)


@pytest.mark.slow
def test_real_data_and_a_custom_caption_get_pictures_only(demo_run, tmp_path):
    cfg = load_config(demo_run / "configs.yaml")
    root = tmp_path / "real"
    shutil.copytree(Path(cfg.root_dir), root)
    (root / cfg.dataset_name / REGIONS_FILE).unlink()  # real data: no regions
    base = ["--config_file", str(demo_run / "configs.yaml"), "--root_dir", str(root)]
    drawn = _run(*base, "--out", str(tmp_path / "real.png"))
    assert drawn.returncode == 0 and (tmp_path / "real.png").is_file() and drawn.stdout == "", drawn.stderr[-2000:]
    assert_one_error_line(_run(*base, "--json", "--out", str(tmp_path / "x.png")), ["--json", REGIONS_FILE])
    assert not (tmp_path / "x.png").exists()
    image = next((root / cfg.dataset_name / "imgs").rglob("*.png"))
    custom = _run(*base, "--caption", "A man in a red coat and blue jeans.", "--image", str(image),
                  "--out", str(tmp_path / "custom.png"))
    assert custom.returncode == 0 and (tmp_path / "custom.png").is_file(), custom.stderr[-2000:]


@pytest.mark.parametrize("args, names", [
    (["--caption", "a red coat"], ["--caption", "--image"]),
    (["--num", "0"], ["--num"]),
    (["--split", "nosuch"], ["nosuch"]),
])
def test_wrong_commands_end_in_one_line(demo_run, args, names):
    assert_one_error_line(_run("--config_file", str(demo_run / "configs.yaml"), *args), names)


def test_a_run_without_sgiha_is_refused(tmp_path, demo_run):
    cfg = load_config(demo_run / "configs.yaml")
    state = torch.load(demo_run / "best.pth", weights_only=False)
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("sgiha.")}
    torch.save(state, tmp_path / "plain.pth")
    result = _run("--config_file", str(demo_run / "configs.yaml"), "--checkpoint", str(tmp_path / "plain.pth"))
    assert_one_error_line(result, ["plain.pth", "aqa"])
    assert cfg.losses  # the run itself is intact


@pytest.mark.parametrize("examples, layers, per_row", [(5, [2, 3], 4), (3, [6, 7, 8, 9, 10, 11], 2), (1, [2, 3], 1)])
def test_examples_are_laid_out_in_columns_within_the_width(examples: int, layers: list[int], per_row: int):
    """Each example (a caption and its phrases) is a panel; panels fill rows of ``per_row`` within MAX_WIDTH."""
    phrases = ["short black hair", "a very long and particularly descriptive red woollen winter coat", "blue jeans"]
    questions = [Question(i, f"The man number {i} has short black hair, is dressed in a very long and particularly "
                             f"descriptive red woollen winter coat and is wearing blue jeans.", p, "upper")
                 for i in range(examples) for p in phrases]
    images = [Image.new("RGB", (48, 128), (90, 90, 90)) for _ in range(examples)]
    maps = torch.rand(len(questions), len(layers) + 1, 8, 4, generator=torch.Generator().manual_seed(0))
    hits = [True] * len(questions)
    panels = visualize_grounding.example_panels(questions, maps, images, layers, hits)
    layout = GridLayout()
    panel_width = GridLayout(columns=len(layers) + 2).canvas_size(len(phrases) * (len(layers) + 2))[0]
    assert len(panels) == examples and {p.width for p in panels} == {panel_width}
    picture = visualize_grounding.draw(questions, maps, images, layers, hits)
    assert picture.width == layout.margin + per_row * (panel_width + layout.margin) <= MAX_WIDTH
    title_lines = len(wrap_words(visualize_grounding.TITLE, load_font(layout.font_size),
                                 picture.width - 2 * layout.margin))
    rows = -(-examples // per_row)
    assert picture.height == (layout.margin + title_lines * layout.line_height + layout.margin
                              + rows * (panels[0].height + layout.margin))
    tiles = visualize_grounding.example_tiles(questions[:3], maps[:3], images, ["combined"], hits)
    assert [t.label for t in tiles[::2]] == [f'"{p}"\n(upper)' for p in phrases]  # whole phrases, drawn whole


def test_panels_share_their_text_lines_so_that_rows_line_up():
    short, long = "A man in blue jeans.", "A man " + "who walks down a long street " * 6 + "in blue jeans."
    questions = [Question(0, short, "blue jeans", "lower"), Question(1, long, "blue jeans", "lower")]
    images = [Image.new("RGB", (48, 128), (90, 90, 90))] * 2
    panels = visualize_grounding.example_panels(questions, torch.rand(2, 3, 8, 4), images, [2, 3], None)
    assert panels[0].size == panels[1].size
