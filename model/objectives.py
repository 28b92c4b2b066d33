"""Training objectives: SDM, ID, MLM (method §5) and AQA (method §6.4), each returning a scalar tensor.

Inputs may come out of an autocast region (the towers may run in float16 or bfloat16): every function here runs
with autocast off and upcasts its inputs, so similarities, softmaxes, KL divergences and cross-entropies are float32
(float64 inputs stay float64) and equal what the same inputs give outside autocast.
Under data parallelism the ``shard`` argument makes each process compute its rows against the whole global batch
(model/shard.py); the default is the single-process batch.
"""
from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from model.shard import LOCAL, BatchShard

Fn = TypeVar("Fn", bound=Callable[..., Tensor])


def outside_autocast(fn: Fn) -> Fn:
    """``fn`` with autocast off on its first argument's device: autocast would cast matrix products to half
    precision even for float32 inputs."""
    @functools.wraps(fn)
    def wrapper(first: Tensor, *args, **kwargs) -> Tensor:
        with torch.autocast(first.device.type, enabled=False):
            return fn(first, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


def full_precision(x: Tensor) -> Tensor:
    """``x`` in float32 at least: half-precision autocast outputs are upcast, float64 is kept."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


@outside_autocast
def cosine_matrix(queries: Tensor, keys: Tensor) -> Tensor:
    """[Nq, Nk] cosine similarities, in float32 (or float64)."""
    return F.normalize(full_precision(queries), dim=-1) @ F.normalize(full_precision(keys), dim=-1).t()


@outside_autocast
def compute_sdm(image_feats: Tensor, text_feats: Tensor, pids: Tensor, logit_scale: float,
                epsilon: float = 1e-8, shard: BatchShard = LOCAL) -> Tensor:
    """Similarity distribution matching: KL(softmax(scaled cosine) || identity-label distribution), both ways."""
    all_pids = shard.gather(pids)
    t2i = logit_scale * cosine_matrix(text_feats, shard.gather(image_feats))
    i2t = t2i.t() if shard.world_size == 1 else logit_scale * cosine_matrix(image_feats, shard.gather(text_feats))
    same_id = (pids.view(-1, 1) == all_pids.view(1, -1)).float()
    # Row i of either direction is matched against the samples that share sample i's identity.
    log_target = torch.log(same_id / same_id.sum(dim=1, keepdim=True) + epsilon)

    def one_direction(scores: Tensor) -> Tensor:
        log_pred = F.log_softmax(scores, dim=1)
        return shard.mean((log_pred.exp() * (log_pred - log_target)).sum(dim=1))

    return one_direction(i2t) + one_direction(t2i)


@outside_autocast
def compute_id(image_logits: Tensor, text_logits: Tensor, pids: Tensor, shard: BatchShard = LOCAL) -> Tensor:
    """Identity classification: mean of the image and text cross-entropies (method §5)."""
    image = F.cross_entropy(full_precision(image_logits), pids, reduction="none")
    text = F.cross_entropy(full_precision(text_logits), pids, reduction="none")
    return (shard.mean(image) + shard.mean(text)) / 2


@outside_autocast
def compute_mlm(scores: Tensor, labels: Tensor, shard: BatchShard = LOCAL,
                global_count: int | Tensor | None = None) -> Tensor:
    """Cross-entropy over the positions whose label is not 0 (method §5), averaged over the global batch's.

    ``scores`` [..., vocab] and ``labels`` [...]: either every position, or only the masked ones.
    ``global_count``: the masked positions of all processes, when the caller has counted them already (a tensor
    keeps the step free of host synchronisation).
    """
    labels = labels.reshape(-1)
    # ignore_index instead of selecting the labelled rows: the same sum without a copy of the [rows, vocab] scores
    # (the training model passes only masked rows, for which that copy was the whole selection)
    losses = F.cross_entropy(full_precision(scores).reshape(-1, scores.shape[-1]), labels, ignore_index=0,
                             reduction="none")
    if global_count is None:
        global_count = shard.count(int((labels != 0).sum()), losses.device)
    return losses.sum() * shard.world_size / global_count


@outside_autocast
def compute_aqa(answer_feats: Tensor, bridge_feats: Tensor, temperature: float, shard: BatchShard = LOCAL) -> Tensor:
    """Symmetric InfoNCE between answer features and SG-IHA outputs, cosine / temperature (method §6.4)."""
    scores = cosine_matrix(answer_feats, shard.gather(bridge_feats)) / temperature
    if shard.world_size == 1:
        back = scores.t()
    else:
        back = cosine_matrix(bridge_feats, shard.gather(answer_feats)) / temperature
    targets = torch.arange(scores.shape[0], device=scores.device) + shard.offset
    return (shard.mean(F.cross_entropy(scores, targets, reduction="none"))
            + shard.mean(F.cross_entropy(back, targets, reduction="none")))
