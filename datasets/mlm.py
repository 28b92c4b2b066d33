"""BERT-style caption masking for the IRRA MLM objective (method §5)."""
from __future__ import annotations

import torch

FIRST_WORD_ID = 1  # method §5: real tokens have ids >= 1 (0 is padding) and random replacements start here
FALLBACK_POSITION = 1  # method §5: the first token after SOT is masked when nothing was selected


def _mask_fallback(ids: torch.LongTensor, mask_id: int) -> tuple[torch.LongTensor, torch.LongTensor]:
    """Nothing was selected: replace the first word token by the mask (method §5)."""
    masked, labels = ids.clone(), torch.zeros_like(ids)
    masked[FALLBACK_POSITION] = mask_id
    labels[FALLBACK_POSITION] = ids[FALLBACK_POSITION]
    return masked, labels


def mask_tokens(ids: torch.LongTensor, *, mask_id: int, prob: float, mask_ratio: float, random_ratio: float,
                generator: torch.Generator) -> tuple[torch.LongTensor, torch.LongTensor]:
    """Masked copy of ``ids`` and labels (original id where selected, 0 elsewhere).

    Each real token (FIRST_WORD_ID <= id < mask_id) is selected with ``prob``; a selected token becomes
    ``mask_id`` with ``mask_ratio``, a random id in [FIRST_WORD_ID, mask_id - 1] with ``random_ratio``,
    and stays unchanged otherwise. ``ids`` is one SOT..EOT sequence.
    """
    real = (ids >= FIRST_WORD_ID) & (ids < mask_id)
    selected = real & (torch.rand(ids.shape, generator=generator) < prob)
    if not selected.any():
        return _mask_fallback(ids, mask_id)
    action = torch.rand(ids.shape, generator=generator)
    to_mask = selected & (action < mask_ratio)
    to_random = selected & (action >= mask_ratio) & (action < mask_ratio + random_ratio)
    random_ids = torch.randint(FIRST_WORD_ID, mask_id, ids.shape, generator=generator)
    masked = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    masked = torch.where(to_random, random_ids, masked)
    labels = torch.where(selected, ids, torch.zeros_like(ids))
    return masked, labels
