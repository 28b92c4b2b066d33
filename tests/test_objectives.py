"""Objectives against loop-based computations written from method §5 and 6.4."""
from __future__ import annotations

import math

import torch

from model.objectives import compute_aqa, compute_id, compute_mlm, compute_sdm


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def _log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    log_z = top + math.log(sum(math.exp(v - top) for v in row))
    return [v - log_z for v in row]


def _sdm_loop(image: torch.Tensor, text: torch.Tensor, pids: list[int], scale: float, eps: float) -> float:
    n = len(pids)
    img, txt = image.tolist(), text.tolist()
    total = 0.0
    for queries, keys in ((img, txt), (txt, img)):
        direction = 0.0
        for i in range(n):
            log_p = _log_softmax([scale * _cos(queries[i], keys[j]) for j in range(n)])
            positives = sum(pids[j] == pids[i] for j in range(n))
            for j in range(n):
                target = (pids[j] == pids[i]) / positives
                direction += math.exp(log_p[j]) * (log_p[j] - math.log(target + eps))
        total += direction / n
    return total


def test_sdm_matches_the_loop_with_repeated_identities():
    torch.manual_seed(0)
    pids = [3, 1, 3, 7, 1, 3]
    image, text = torch.randn(6, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    expected = _sdm_loop(image, text, pids, 50.0, 1e-8)
    got = compute_sdm(image, text, torch.tensor(pids), 50.0)
    assert math.isclose(got.item(), expected, rel_tol=1e-5)


def test_sdm_is_near_zero_when_matching_pairs_are_identical_and_unique():
    feats = torch.eye(4) * 3
    # Only the matching pair is a positive and logit_scale is large: the distributions coincide.
    assert compute_sdm(feats, feats, torch.arange(4), 50.0).item() < 1e-6


def test_id_is_the_mean_of_two_cross_entropies():
    torch.manual_seed(0)
    image_logits, text_logits = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    pids = [0, 3, 3, 1, 2]
    ce = [sum(-_log_softmax(logits[i].tolist())[p] for i, p in enumerate(pids)) / len(pids)
          for logits in (image_logits, text_logits)]
    got = compute_id(image_logits, text_logits, torch.tensor(pids))
    assert math.isclose(got.item(), (ce[0] + ce[1]) / 2, rel_tol=1e-6)


def test_mlm_averages_cross_entropy_over_labelled_positions_only():
    torch.manual_seed(0)
    scores = torch.randn(2, 5, 11, dtype=torch.float64)
    labels = torch.tensor([[0, 4, 0, 0, 9], [0, 0, 2, 0, 0]])
    terms = [-_log_softmax(scores[b, t].tolist())[int(labels[b, t])]
             for b in range(2) for t in range(5) if labels[b, t] != 0]
    assert math.isclose(compute_mlm(scores, labels).item(), sum(terms) / len(terms), rel_tol=1e-6)
    # The same loss from the masked positions alone (what the training model feeds it).
    masked = labels != 0
    assert math.isclose(compute_mlm(scores[masked], labels[masked]).item(), sum(terms) / len(terms), rel_tol=1e-6)


def test_mlm_gradient_reaches_labelled_positions_only():
    """The gradient of the mean over labelled positions: zero rows where the label is 0, and on the others that of
    a per-row log-softmax written out (compute_mlm skips unlabelled rows by ignore_index, not by selecting rows)."""
    torch.manual_seed(1)
    scores = torch.randn(3, 4, 7, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[0, 3, 0, 6], [1, 0, 0, 0], [0, 0, 2, 5]])
    compute_mlm(scores, labels).backward()
    got = scores.grad.clone()
    scores.grad = None
    masked = labels != 0
    picked = scores.log_softmax(dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    (-(picked * masked).sum() / masked.sum()).backward()
    assert torch.allclose(got, scores.grad, atol=1e-12)
    assert got[~masked].abs().max().item() == 0


def test_aqa_matches_the_loop_at_temperature_004():
    torch.manual_seed(0)
    answers, bridges = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    tau = 0.04
    sim = [[_cos(answers[i].tolist(), bridges[j].tolist()) / tau for j in range(5)] for i in range(5)]
    rows = -sum(_log_softmax(sim[i])[i] for i in range(5)) / 5
    cols = -sum(_log_softmax([sim[j][i] for j in range(5)])[i] for i in range(5)) / 5
    assert math.isclose(compute_aqa(answers, bridges, tau).item(), rows + cols, rel_tol=1e-6)


def test_losses_accept_half_precision_inputs_and_return_float32():
    torch.manual_seed(0)
    a, b = torch.randn(4, 8).half(), torch.randn(4, 8).half()
    pids = torch.tensor([0, 1, 0, 2])
    assert compute_sdm(a, b, pids, 50.0).dtype == torch.float32
    assert compute_aqa(a, b, 0.04).dtype == torch.float32
    assert compute_id(a, b, pids).dtype == torch.float32
