"""bench/aqa_parts.py: answer picks and per-part tallies against hand-checked cases and loops, and a run's table."""
from __future__ import annotations

import math

import pytest
import torch

from bench import aqa_parts
from inference.grounding import Question
from tests.test_tools_visualize_grounding import _expected_questions
from utils.config import load_config


def test_picks_stay_within_each_batch_and_drop_the_incomplete_one():
    # Batch 2: question 1's Z points at answer 0 (same batch); question 2's Z at answer 1 (another batch) is out of
    # reach, so it picks within its own batch; question 4 is in no whole batch.
    answer = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0], [1.0, 1.0]])
    bridge = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    assert aqa_parts.pick_answers(answer, bridge, 2).tolist() == [0, 0, 3, 3]


def test_picks_match_a_loop():
    gen = torch.Generator().manual_seed(0)
    answer, bridge = torch.randn(11, 6, generator=gen), torch.randn(11, 6, generator=gen)
    expected = []
    for start in (0, 4):  # batches of 4; the last 3 questions make no whole batch
        for i in range(start, start + 4):
            cos = [float(torch.dot(bridge[i], answer[j]) / (bridge[i].norm() * answer[j].norm()))
                   for j in range(start, start + 4)]
            expected.append(start + max(range(4), key=cos.__getitem__))
    assert aqa_parts.pick_answers(answer, bridge, 4).tolist() == expected


def test_part_tallies_by_hand():
    questions = [Question(0, "c", "red coat", "upper"), Question(1, "c", "red coat", "upper"),
                 Question(2, "c", "blue jeans", "lower"), Question(3, "c", "short black hair", "hair")]
    picks = torch.tensor([0, 0, 1, 2])  # own; an identical phrase; another part; another part
    scores = aqa_parts.part_scores(picks, questions)
    assert scores == {"hair": (1, 0, 0, 0), "lower": (1, 0, 0, 0), "upper": (2, 1, 2, 2)}


def test_batch_loss_is_the_symmetric_infonce_of_each_batch():
    gen = torch.Generator().manual_seed(1)
    answer, bridge = torch.randn(7, 5, generator=gen), torch.randn(7, 5, generator=gen)
    tau = 0.2
    expected = []
    for start in (0, 3):
        a = torch.nn.functional.normalize(answer[start:start + 3], dim=1)
        z = torch.nn.functional.normalize(bridge[start:start + 3], dim=1)
        s = (a @ z.T / tau).tolist()
        rows = sum(math.log(sum(math.exp(v) for v in s[i])) - s[i][i] for i in range(3)) / 3
        cols = sum(math.log(sum(math.exp(s[j][i]) for j in range(3))) - s[i][i] for i in range(3)) / 3
        expected.append(rows + cols)
    assert aqa_parts.batch_losses(answer, bridge, 3, tau) == pytest.approx(expected, rel=1e-5)


def test_a_toy_run_asks_every_mentioned_part(demo_run, tmp_path, capsys):
    out = tmp_path / "parts.md"
    scores, losses = aqa_parts.main(["--config_file", str(demo_run / "configs.yaml"), "--batch_size", "4",
                                     "--out", str(out)])
    total = _expected_questions(load_config(demo_run / "configs.yaml"))
    assert sum(s.count for s in scores.values()) == total // 4 * 4 and len(losses) == total // 4
    assert all(s.exact <= s.same_phrase <= s.same_part <= s.count for s in scores.values())
    assert out.read_text().strip() == capsys.readouterr().out.strip()
