"""bench/feature_spread.py: the cosine statistics against hand-checked cases and a loop, and its measurement steps."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from bench import feature_spread
from tests.tiny_run import tiny_args


def test_orthonormal_features_have_zero_spread_and_full_match_gap():
    eye = torch.eye(5, 8)
    row = feature_spread.spread(eye, eye)
    assert row.image_mean == pytest.approx(0.0) and row.text_mean == pytest.approx(0.0)
    assert row.match_gap == pytest.approx(1.0)  # matching pairs at cosine 1, the others at 0


def test_identical_features_are_a_collapse():
    same = torch.ones(4, 3) * torch.tensor([1.0, -2.0, 0.5])
    row = feature_spread.spread(same, 3 * same)  # scale does not matter to a cosine
    assert row.image_mean == pytest.approx(1.0) and row.image_std == pytest.approx(0.0, abs=1e-12)
    assert row.text_mean == pytest.approx(1.0) and row.match_gap == pytest.approx(0.0, abs=1e-12)


def test_off_diagonal_cosines_match_a_loop():
    features = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    expected = [float(torch.dot(features[i], features[j]) / (features[i].norm() * features[j].norm()))
                for i, j in itertools.permutations(range(6), 2)]
    got = feature_spread.off_diagonal_cosines(features).tolist()
    assert sorted(got) == pytest.approx(sorted(expected))
    assert len(got) == 6 * 5


def test_measures_before_training_and_every_n_steps(tiny_toy, tmp_path):
    rows = feature_spread.main(["--steps", "4", "--every", "2", *tiny_args(tiny_toy, tmp_path)])
    assert [step for step, _, _ in rows] == [0, 2, 4]
    assert rows[0][1] == {} and set(rows[1][1]) == {"sdm", "id", "mlm", "aqa"}  # the demo recipe's losses
    assert all(-1.0 <= r.image_mean <= 1.0 and math.isfinite(r.match_gap) for _, _, r in rows)
    assert rows[0][2] != rows[2][2]  # the probe batch is re-encoded by the updated model
