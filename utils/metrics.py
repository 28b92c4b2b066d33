"""Retrieval metrics of method §8 (CMC Rank-k, mAP, mINP) from a query x gallery similarity matrix.

No gallery row is ever sorted. A query's metrics only need the rank of each of its positives, and the
rank of a positive is a count: the gallery items scoring at least as high. Per chunk of queries, each
query's few positive scores are sorted; one batched ``searchsorted`` bins every gallery score between
them, and the suffix sums of the bin counts give every positive's rank. Work and memory per chunk are
linear in its size (the usual full argsort is n log n and holds several int64 matrices of the full size).

Ties: a gallery item scoring exactly as much as a positive ranks ahead of it (ties count against the
query), so the numbers never depend on the gallery order (a model whose scores collapse to a constant
cannot score above chance). The order among tied positives does not change any of the metrics.
"""
from __future__ import annotations

import torch
from torch import Tensor

REPORTED_RANKS = (1, 5, 10)  # method §8: Rank-1/5/10 (those up to max_rank, and max_rank itself)


def retrieval_metrics(similarity: Tensor, q_pids: Tensor, g_pids: Tensor, max_rank: int = 10,
                      chunk_size: int = 1024) -> dict[str, float]:
    """R1/R5/R10 (up to ``max_rank``), mAP and mINP in percent for queries ranking the gallery (method §8).

    ``similarity`` is [num_queries, num_gallery] (any float dtype, on any device: the work runs there).
    Image-to-text: ``retrieval_metrics(similarity.T, g_pids, q_pids)``. Queries are processed
    ``chunk_size`` at a time, which bounds the extra memory.
    """
    _check_inputs(similarity, q_pids, g_pids, max_rank, chunk_size)
    device = similarity.device
    pid_dtype = torch.promote_types(q_pids.dtype, g_pids.dtype)  # int32 and int64 ids: compare as int64
    table, q_group = positive_table(q_pids.to(device, pid_dtype), g_pids.to(device, pid_dtype))
    ranks = sorted({k for k in REPORTED_RANKS if k <= max_rank} | {max_rank})
    limits = torch.tensor(ranks, device=device)
    hits = torch.zeros(len(ranks), dtype=torch.float64, device=device)
    ap_sum = torch.zeros((), dtype=torch.float64, device=device)
    inp_sum = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, similarity.shape[0], chunk_size):
        scores = similarity[start:start + chunk_size].float().contiguous()  # a transposed matrix: rows copied
        if torch.isnan(scores.amax()):  # amax propagates NaN: one pass, no mask
            raise ValueError(f"retrieval_metrics: similarity contains NaN (in query rows from {start})")
        pos, num_pos = positive_scores(scores, table[q_group[start:start + chunk_size]])
        ap, inp, first = query_scores(pos, num_pos, scores)
        ap_sum += ap.sum()
        inp_sum += inp.sum()
        hits += (first[:, None] <= limits).sum(0)
    scale = 100.0 / similarity.shape[0]
    result = {f"R{k}": float(h) * scale for k, h in zip(ranks, hits.tolist())}
    result["mAP"] = float(ap_sum) * scale
    result["mINP"] = float(inp_sum) * scale
    return result


def _check_inputs(similarity: Tensor, q_pids: Tensor, g_pids: Tensor, max_rank: int, chunk_size: int) -> None:
    if similarity.dim() != 2 or not similarity.is_floating_point():
        raise ValueError(f"retrieval_metrics: similarity must be a 2-D float tensor [queries, gallery], "
                         f"got {tuple(similarity.shape)} {similarity.dtype}")
    if q_pids.shape != (similarity.shape[0],) or g_pids.shape != (similarity.shape[1],):
        raise ValueError(f"retrieval_metrics: expected q_pids of shape ({similarity.shape[0]},) and g_pids of "
                         f"shape ({similarity.shape[1]},) for similarity {tuple(similarity.shape)}, got "
                         f"{tuple(q_pids.shape)} and {tuple(g_pids.shape)}")
    if max_rank < 1 or chunk_size < 1:
        raise ValueError(f"retrieval_metrics: max_rank ({max_rank}) and chunk_size ({chunk_size}) must be >= 1")


def positive_table(q_pids: Tensor, g_pids: Tensor) -> tuple[Tensor, Tensor]:
    """Gallery columns of each identity, left-packed and padded with -1, and each query's row in that table."""
    order = torch.argsort(g_pids, stable=True)
    ids, counts = torch.unique_consecutive(g_pids[order], return_counts=True)
    group = torch.repeat_interleave(torch.arange(len(ids), device=g_pids.device), counts)
    slot = torch.arange(len(order), device=g_pids.device) - (torch.cumsum(counts, 0) - counts)[group]
    table = torch.full((len(ids), int(counts.max())), -1, dtype=torch.long, device=g_pids.device)
    table[group, slot] = order
    q_group = torch.searchsorted(ids, q_pids).clamp(max=len(ids) - 1)
    missing = (ids[q_group] != q_pids).nonzero().flatten()
    if len(missing):
        raise ValueError(f"retrieval_metrics: {len(missing)} of {len(q_pids)} queries have no positive in the "
                         f"gallery (query indices {missing[:5].tolist()}..., pids {q_pids[missing[:5]].tolist()}); "
                         "every query identity must appear among the gallery pids")
    return table, q_group


def positive_scores(scores: Tensor, columns: Tensor) -> tuple[Tensor, Tensor]:
    """Each query's positive scores in ascending order, padded with +inf, and their number.

    ``columns`` holds each query's positive gallery columns, left-packed and padded with -1.
    """
    valid = columns >= 0
    num_pos = valid.sum(1)
    columns = columns[:, :int(num_pos.max())]
    valid = valid[:, :columns.shape[1]]
    pos = scores.gather(1, columns.clamp(min=0)).masked_fill(~valid, float("inf")).sort(dim=1).values
    return pos, num_pos


def query_scores(pos: Tensor, num_pos: Tensor, scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per query: AP, INP (fractions) and the rank of its first positive.

    ``pos``: ascending positive scores padded with +inf; ``num_pos``: their number; ``scores``: the
    queries' scores of every gallery item.
    """
    num_rows, width = pos.shape
    num_pos = num_pos[:, None]
    # slot of an item = positives scoring <= it; items scoring >= positive a are those with slot > a.
    slot = torch.searchsorted(pos, scores, right=True, out_int32=True)
    offsets = torch.arange(num_rows, dtype=torch.int32, device=pos.device)[:, None] * (width + 1)
    hist = torch.bincount((slot + offsets).flatten(), minlength=num_rows * (width + 1)).view(num_rows, width + 1)
    at_least = hist.flip(1).cumsum(1).flip(1)[:, 1:]  # items (positives included) scoring >= each positive
    pos_at_least = num_pos - torch.searchsorted(pos, pos)  # positives scoring >= each positive
    # Ascending slot a is the (num_pos - a)-th positive from the top: that many positives up to its rank.
    found = num_pos - torch.arange(width, device=pos.device)
    rank = (at_least - pos_at_least + found).double()  # ties: tied items rank ahead of the positive
    precision = torch.where(found > 0, found / rank, torch.zeros((), dtype=torch.float64, device=pos.device))
    ap = precision.sum(1) / num_pos.squeeze(1)
    inp = num_pos.squeeze(1) / rank[:, 0]  # slot 0: the lowest-scoring positive, i.e. the last one
    first = rank.gather(1, num_pos - 1).squeeze(1)
    return ap, inp, first


def chance_rank1(q_pids: torch.Tensor, g_pids: torch.Tensor) -> float:
    """Expected text-to-image Rank-1 (percent) of a random ranking: mean share of each query's positives.

    Identities may be any integers (negative, or huge like 10**12): they are counted by value, never used as
    indices.
    """
    pids = torch.cat([g_pids.long().cpu(), q_pids.long().cpu()])
    dense = torch.unique(pids, return_inverse=True)[1]  # each identity as 0..K-1, so the counts take K slots
    per_identity = torch.bincount(dense[:len(g_pids)], minlength=int(dense.max()) + 1)
    positives = per_identity[dense[len(g_pids):]].double()
    return float(positives.mean() / len(g_pids) * 100)
