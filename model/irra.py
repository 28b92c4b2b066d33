"""IRRA's implicit relation reasoning branch (method §5): cross-attention, cross-modal transformer, MLM head.

The training model holds these as top-level modules (``cross_attn``, ``cross_modal_transformer``,
``ln_pre_t``, ``ln_pre_i``, ``ln_post``, ``mlm_head``) because the optimizer groups match those names.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from model.transformer import MultiheadAttention, QuickGELU, Transformer, init_transformer_


def projection_std(width: int, depth: int) -> float:
    """method §5: std of the out-projections, width^-0.5 * (2 * depth)^-0.5."""
    return width ** -0.5 * (2 * depth) ** -0.5


def build_cross_attn(width: int, heads: int, depth: int) -> MultiheadAttention:
    """Text-to-image cross-attention with method §5's initialisation."""
    attn = MultiheadAttention(width, heads)
    nn.init.normal_(attn.in_proj_weight, std=width ** -0.5)
    nn.init.normal_(attn.out_proj.weight, std=projection_std(width, depth))
    return attn


def build_cross_modal_transformer(width: int, depth: int, heads: int) -> Transformer:
    """Non-causal transformer over the cross-attended text tokens (method §5)."""
    transformer = Transformer(width, depth, heads)
    init_transformer_(transformer, width)
    return transformer


class MLMHead(nn.Sequential):
    """dense -> QuickGELU -> LayerNorm -> vocabulary projection (method §5)."""

    def __init__(self, width: int, vocab_size: int, depth: int):
        super().__init__(OrderedDict([
            ("dense", nn.Linear(width, width)),
            ("gelu", QuickGELU()),
            ("ln", nn.LayerNorm(width)),
            ("fc", nn.Linear(width, vocab_size)),
        ]))
        nn.init.normal_(self.dense.weight, std=(2 * width) ** -0.5)
        nn.init.normal_(self.fc.weight, std=projection_std(width, depth))


def cross_former(cross_attn: MultiheadAttention, transformer: Transformer, text: Tensor, image: Tensor) -> Tensor:
    """Cross-attend normalised text tokens to normalised image tokens, then run the cross-modal transformer."""
    return transformer(cross_attn(text, context=image))[0]
