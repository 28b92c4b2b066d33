"""utils.metrics.retrieval_metrics against a loop-based reference written here (method §8 definitions)."""
from collections import Counter

import pytest
import torch

from utils.metrics import chance_rank1, retrieval_metrics

# Identities as benchmarks or users may number them: huge, negative, far apart.
ODD_IDS = torch.tensor([10**12, -7, 0, 2**40 + 3, -(10**15), 5, 987654321012, -1, 10**12 + 1])


def reference_metrics(similarity: torch.Tensor, q_pids: torch.Tensor, g_pids: torch.Tensor,
                      ks=(1, 5, 10)) -> dict:
    """One query at a time: sort the gallery by score, a tied item ranked ahead of a positive (documented rule)."""
    sims, qs, gs = similarity.double().tolist(), q_pids.tolist(), g_pids.tolist()
    aps, inps, hits = [], [], {k: 0 for k in ks}
    for row, pid in zip(sims, qs):
        is_pos = [g == pid for g in gs]
        order = sorted(range(len(gs)), key=lambda j: (-row[j], is_pos[j]))
        pos_ranks = [r for r, j in enumerate(order, start=1) if is_pos[j]]
        aps.append(sum(n / r for n, r in enumerate(pos_ranks, start=1)) / len(pos_ranks))
        inps.append(len(pos_ranks) / pos_ranks[-1])
        for k in ks:
            hits[k] += pos_ranks[0] <= k
    result = {f"R{k}": 100.0 * h / len(qs) for k, h in hits.items()}
    result.update(mAP=100.0 * sum(aps) / len(qs), mINP=100.0 * sum(inps) / len(qs))
    return result


def assert_same(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for key in expected:
        assert isinstance(got[key], float)
        assert got[key] == pytest.approx(expected[key], abs=1e-9), key


def random_problem(seed: int, num_queries: int = 37, num_gallery: int = 53, num_ids: int = 9):
    """Every id has several images; queries are captions of random images (several positives each)."""
    gen = torch.Generator().manual_seed(seed)
    g_pids = torch.arange(num_gallery) % num_ids
    q_pids = g_pids[torch.randint(0, num_gallery, (num_queries,), generator=gen)]
    q_pids[:num_ids] = torch.arange(num_ids)  # every id is also a query: i2t has positives too
    similarity = torch.randn(num_queries, num_gallery, generator=gen)
    return similarity, q_pids, g_pids


@pytest.mark.parametrize("chunk_size", [1, 5, 1024])
def test_text_to_image_matches_reference(chunk_size):
    similarity, q_pids, g_pids = random_problem(0)
    got = retrieval_metrics(similarity, q_pids, g_pids, chunk_size=chunk_size)
    assert_same(got, reference_metrics(similarity, q_pids, g_pids))


def test_image_to_text_is_the_transpose():
    similarity, q_pids, g_pids = random_problem(1)
    got = retrieval_metrics(similarity.T, g_pids, q_pids, chunk_size=4)
    assert_same(got, reference_metrics(similarity.T, g_pids, q_pids))


def test_fp16_with_many_ties_matches_reference():
    similarity, q_pids, g_pids = random_problem(2)
    coarse = (similarity * 2).round().half()  # a handful of distinct values: ties everywhere
    got = retrieval_metrics(coarse, q_pids, g_pids, chunk_size=8)
    assert_same(got, reference_metrics(coarse.float(), q_pids, g_pids))
    assert got != retrieval_metrics(similarity, q_pids, g_pids)  # the ties do matter here


def test_hand_checked_case():
    # Positives at ranks 2 and 4: AP = (1/2 + 2/4) / 2, INP = 2/4; the first hit is at rank 2.
    similarity = torch.tensor([[0.9, 0.8, 0.7, 0.6]])
    got = retrieval_metrics(similarity, torch.tensor([7]), torch.tensor([1, 7, 2, 7]), max_rank=2)
    assert got == {"R1": 0.0, "R2": 100.0, "mAP": 50.0, "mINP": 50.0}


def test_ties_count_against_the_query():
    # Constant scores: the single positive ranks behind all 3 tied items, whatever the gallery order.
    similarity = torch.zeros(2, 4)
    got = retrieval_metrics(similarity, torch.tensor([0, 3]), torch.tensor([0, 1, 2, 3]))
    assert got["R1"] == 0.0 and got["R5"] == 100.0
    assert got["mAP"] == pytest.approx(25.0) and got["mINP"] == pytest.approx(25.0)


def test_gallery_order_does_not_matter():
    similarity, q_pids, g_pids = random_problem(3)
    coarse = (similarity * 3).round()
    perm = torch.randperm(len(g_pids), generator=torch.Generator().manual_seed(0))
    assert_same(retrieval_metrics(coarse[:, perm], q_pids, g_pids[perm]), retrieval_metrics(coarse, q_pids, g_pids))


@pytest.mark.parametrize("max_rank, keys", [(1, ["R1"]), (3, ["R1", "R3"]), (20, ["R1", "R5", "R10", "R20"])])
def test_reported_ranks(max_rank, keys):
    similarity, q_pids, g_pids = random_problem(4)
    got = retrieval_metrics(similarity, q_pids, g_pids, max_rank=max_rank)
    assert list(got) == keys + ["mAP", "mINP"]
    expected = reference_metrics(similarity, q_pids, g_pids, ks=[int(k[1:]) for k in keys])
    assert_same(got, expected)


def test_query_without_positive_is_an_error():
    similarity = torch.rand(3, 4)
    with pytest.raises(ValueError, match="no positive in the gallery"):
        retrieval_metrics(similarity, torch.tensor([0, 5, 1]), torch.tensor([0, 1, 1, 2]))


def test_nan_is_an_error():
    similarity = torch.rand(3, 4)
    similarity[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(similarity, torch.tensor([0, 1, 1]), torch.tensor([0, 1, 1, 2]))


@pytest.mark.parametrize("similarity, q_pids, g_pids", [
    (torch.rand(3, 4), torch.arange(4), torch.arange(4)),
    (torch.rand(3), torch.arange(3), torch.arange(3)),
    (torch.ones(3, 3, dtype=torch.long), torch.arange(3), torch.arange(3)),
])
def test_bad_shapes_are_errors(similarity, q_pids, g_pids):
    with pytest.raises(ValueError, match="similarity|q_pids"):
        retrieval_metrics(similarity, q_pids, g_pids)


def test_any_integer_ids_give_the_same_metrics():
    similarity, q_pids, g_pids = random_problem(5)
    odd_q, odd_g = ODD_IDS[q_pids], ODD_IDS[g_pids]  # the same identities under other names
    got = retrieval_metrics(similarity, odd_q, odd_g, chunk_size=7)
    assert_same(got, reference_metrics(similarity, odd_q, odd_g))
    assert_same(got, retrieval_metrics(similarity, q_pids, g_pids))


def test_int32_gallery_ids_are_not_matched_to_wrapped_int64_query_ids():
    # 2**32 + 7 wraps to 7 in int32: comparing in the gallery's dtype would call it a positive of identity 7.
    with pytest.raises(ValueError, match="no positive in the gallery"):
        retrieval_metrics(torch.rand(2, 3), torch.tensor([7, 2**32 + 7]), torch.tensor([7, 1, 7], dtype=torch.int32))


def chance_by_hand(q_pids: list[int], g_pids: list[int]) -> float:
    per_identity = Counter(g_pids)
    return 100.0 * sum(per_identity[q] / len(g_pids) for q in q_pids) / len(q_pids)


@pytest.mark.parametrize("seed", [0, 1])
def test_chance_rank1_counts_positives_of_any_integer_ids(seed):
    _, q_pids, g_pids = random_problem(seed)
    for names in (torch.arange(len(ODD_IDS)), ODD_IDS):
        q, g = names[q_pids], names[g_pids]
        assert chance_rank1(q, g) == pytest.approx(chance_by_hand(q.tolist(), g.tolist()), rel=1e-12)
    # a query identity absent from the gallery counts as zero positives
    assert chance_rank1(torch.tensor([-(10**15), 3]), torch.tensor([3, 3, 10**12, 4])) == pytest.approx(25.0)
