"""Pre-LN residual attention blocks (method §3) shared by the CLIP towers and the IRRA branch.

Parameter names follow OpenAI CLIP (``attn.in_proj_weight``, ``mlp.c_fc``, ...) so its checkpoints load
unchanged; attention is computed by ``F.scaled_dot_product_attention`` on batch-first tensors.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

QUICK_GELU_SCALE = 1.702  # method §3: QuickGELU(x) = x * sigmoid(1.702 x)
MLP_RATIO = 4  # method §3: hidden width of a block's MLP = 4 x width


class QuickGELU(nn.Module):
    """CLIP's sigmoid approximation of GELU (method §3)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(QUICK_GELU_SCALE * x)


def split_heads(x: Tensor, heads: int) -> Tensor:
    """[B, N, H*d] -> [B, H, N, d]."""
    batch, length, width = x.shape
    return x.view(batch, length, heads, width // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """[B, H, N, d] -> [B, N, H*d]."""
    batch, heads, length, dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * dim)


class MultiheadAttention(nn.Module):
    """Batch-first multi-head attention with ``nn.MultiheadAttention``'s parameters, computed by SDPA."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} is not divisible by its {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        # Same initialisation as nn.MultiheadAttention.
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: Tensor, context: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """Self-attention over ``x``, or cross-attention from ``x`` to ``context`` (keys = values)."""
        width = x.shape[-1]
        if context is None:
            q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            q = F.linear(x, self.in_proj_weight[:width], self.in_proj_bias[:width])
            k, v = F.linear(context, self.in_proj_weight[width:], self.in_proj_bias[width:]).chunk(2, dim=-1)
        q, k, v = (split_heads(t, self.heads) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
        return self.out_proj(merge_heads(out))


class ResidualAttentionBlock(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x)) (method §3)."""

    def __init__(self, width: int, heads: int, causal: bool = False):
        super().__init__()
        self.causal = causal
        self.ln_1 = nn.LayerNorm(width)
        self.attn = MultiheadAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, width * MLP_RATIO)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(width * MLP_RATIO, width)),
        ]))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x), is_causal=self.causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of residual blocks that can hand back the residual stream at chosen depths."""

    def __init__(self, width: int, layers: int, heads: int, causal: bool = False, grad_checkpoint: bool = False):
        super().__init__()
        self.grad_checkpoint = grad_checkpoint
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, causal) for _ in range(layers))

    def forward(self, x: Tensor, taps: Sequence[int] = ()) -> tuple[Tensor, dict[int, Tensor]]:
        """Output and the hidden states at ``taps`` (method §6.2: 0 = input of block 1, i = output of block i)."""
        layers = len(self.resblocks)
        bad = [t for t in taps if not 0 <= t <= layers]
        if bad:
            raise ValueError(f"hidden-state indices {bad} are outside 0..{layers} for a {layers}-block transformer")
        hidden: dict[int, Tensor] = {0: x} if 0 in taps else {}
        recompute = self.grad_checkpoint and torch.is_grad_enabled()
        for index, block in enumerate(self.resblocks, start=1):
            x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
            if index in taps:
                hidden[index] = x
        return x, hidden


def init_transformer_(transformer: Transformer, width: int) -> None:
    """OpenAI CLIP's text-tower initialisation, also IRRA's for its cross-modal transformer (method §5)."""
    layers = len(transformer.resblocks)
    attn_std = width ** -0.5
    proj_std = width ** -0.5 * (2 * layers) ** -0.5
    fc_std = (2 * width) ** -0.5
    for block in transformer.resblocks:
        nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
        nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
        nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
        nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
