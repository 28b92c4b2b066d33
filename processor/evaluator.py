"""Evaluation: encode a split's gallery images and query captions with the retrieval model, then rank (method §8)."""
from __future__ import annotations

import logging

import torch
from prettytable import PrettyTable
from torch import nn

from model.encode import encode_loader
from utils.distributed import all_sizes, gather_rows
from utils.metrics import retrieval_metrics
from utils.runs import METRIC_KEYS

logger = logging.getLogger(__name__)


def _gather(feats: torch.Tensor, pids: torch.Tensor, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every process's share of a split, in rank order (the shares are contiguous, so this is the split's order).

    A process with an empty share learns the feature width from the others, so that every share has one shape.
    """
    if world_size == 1:
        return feats, pids
    sizes = all_sizes(len(pids), feats.device)
    width = max(all_sizes(feats.shape[1], feats.device))
    return gather_rows(feats.reshape(len(pids), width), sizes), gather_rows(pids, sizes)


@torch.no_grad()
def evaluate(model: nn.Module, eval_set, device: torch.device, amp: str, chunk_size: int, i2t: bool = False,
             rank: int = 0) -> dict[str, float] | None:
    """Text-to-image metrics of ``model`` (anything with encode_image / encode_text) on one split, its features
    encoded under ``amp`` (model/encode.py).

    With ``i2t`` the image-to-text metrics are added under keys prefixed ``i2t_``. A split shared by several
    processes (``eval_set.world_size`` > 1) is encoded share by share; process 0 ranks the gathered features
    (the same numbers as one process) and the others return None.
    """
    was_training = model.training
    model.eval()
    img_feats, g_pids = encode_loader(model.encode_image, eval_set.image_loader, device, amp,
                                      f"{eval_set.name} images")
    txt_feats, q_pids = encode_loader(model.encode_text, eval_set.text_loader, device, amp,
                                      f"{eval_set.name} captions")
    model.train(was_training)
    img_feats, g_pids = _gather(img_feats, g_pids, eval_set.world_size)
    txt_feats, q_pids = _gather(txt_feats, q_pids, eval_set.world_size)
    if rank != 0:
        return None
    similarity = txt_feats @ img_feats.t()
    results = retrieval_metrics(similarity, q_pids, g_pids, chunk_size=chunk_size)
    if i2t:
        back = retrieval_metrics(similarity.t(), g_pids, q_pids, chunk_size=chunk_size)
        results.update({f"i2t_{k}": v for k, v in back.items()})
    return results


def format_table(results: dict[str, dict[str, float]]) -> str:
    """One row per (split, direction) with R1/R5/R10/mAP/mINP in percent."""
    table = PrettyTable(["task", *METRIC_KEYS])
    table.float_format = ".2"
    for split, metrics in results.items():
        table.add_row([f"{split} t2i", *(metrics[k] for k in METRIC_KEYS)])
        if f"i2t_{METRIC_KEYS[0]}" in metrics:
            table.add_row([f"{split} i2t", *(metrics[f"i2t_{k}"] for k in METRIC_KEYS)])
    return table.get_string()


