"""Training objectives: SDM, ID, MLM (SPEC 5) and AQA (SPEC 6.4), each returning a scalar tensor.

Inputs may come out of an autocast region; every loss is computed in float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cosine_matrix(queries: Tensor, keys: Tensor) -> Tensor:
    """[Nq, Nk] cosine similarities, in float32."""
    return F.normalize(queries.float(), dim=-1) @ F.normalize(keys.float(), dim=-1).t()


def compute_sdm(image_feats: Tensor, text_feats: Tensor, pids: Tensor, logit_scale: float,
                epsilon: float = 1e-8) -> Tensor:
    """Similarity distribution matching: KL(softmax(scaled cosine) || identity-label distribution), both ways."""
    t2i = logit_scale * cosine_matrix(text_feats, image_feats)
    same_id = (pids.view(-1, 1) == pids.view(1, -1)).float()
    # Row i of either direction is matched against the samples that share sample i's identity.
    log_target = torch.log(same_id / same_id.sum(dim=1, keepdim=True) + epsilon)

    def one_direction(scores: Tensor) -> Tensor:
        log_pred = F.log_softmax(scores, dim=1)
        return (log_pred.exp() * (log_pred - log_target)).sum(dim=1).mean()

    return one_direction(t2i.t()) + one_direction(t2i)


def compute_id(image_logits: Tensor, text_logits: Tensor, pids: Tensor) -> Tensor:
    """Identity classification: mean of the image and text cross-entropies (SPEC 5)."""
    return (F.cross_entropy(image_logits.float(), pids) + F.cross_entropy(text_logits.float(), pids)) / 2


def compute_mlm(scores: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy over the positions whose label is not 0 (SPEC 5).

    ``scores`` [..., vocab] and ``labels`` [...]: either every position, or only the masked ones.
    """
    return F.cross_entropy(scores.float().reshape(-1, scores.shape[-1]), labels.reshape(-1), ignore_index=0)


def compute_aqa(answer_feats: Tensor, bridge_feats: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE between answer features and SG-IHA outputs, cosine / temperature (SPEC 6.4)."""
    scores = cosine_matrix(answer_feats, bridge_feats) / temperature
    targets = torch.arange(scores.shape[0], device=scores.device)
    return F.cross_entropy(scores, targets) + F.cross_entropy(scores.t(), targets)
