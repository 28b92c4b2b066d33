"""SG-IHA head (method §6.2-6.3): per-layer semantic-guided filtering of visual tokens, question-to-image
cross-attention, a masked self-attention bridge and an MLP, one block per tapped hidden state.

Training only (method §6.5): the retrieval model never builds it.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from model.transformer import merge_heads, split_heads


class NoiseFilter(nn.Module):
    """method §6.3.1: gate the visual tokens by sigmoid(Linear(LN(v_g))); ``res`` also adds Linear(LN(v_g))."""

    def __init__(self, embed_dim: int, vision_width: int, residual: bool, eps: float):
        super().__init__()
        self.residual = residual
        self.norm = nn.LayerNorm(embed_dim, eps=eps)
        self.fc = nn.Linear(embed_dim, vision_width)

    def forward(self, tokens: Tensor, global_feat: Tensor) -> Tensor:
        guide = self.fc(self.norm(global_feat)).unsqueeze(1)  # broadcast over tokens
        filtered = tokens * torch.sigmoid(guide)
        return filtered + guide if self.residual else filtered


class CrossAttention(nn.Module):
    """Question tokens attend to the image's patch tokens (method §6.3.2); no mask."""

    def __init__(self, dim: int, text_width: int, vision_width: int, heads: int, eps: float):
        super().__init__()
        self.heads = heads
        self.norm_q = nn.LayerNorm(text_width, eps=eps)
        self.norm_kv = nn.LayerNorm(vision_width, eps=eps)
        self.q = nn.Linear(text_width, dim)
        self.kv = nn.Linear(vision_width, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, text: Tensor, patches: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-head queries [B, h, L, d/h], keys and values [B, h, N, d/h]."""
        q = split_heads(self.q(self.norm_q(text)), self.heads)
        k, v = (split_heads(t, self.heads) for t in self.kv(self.norm_kv(patches)).chunk(2, dim=-1))
        return q, k, v

    def forward(self, text: Tensor, patches: Tensor) -> Tensor:
        q, k, v = self._heads(text, patches)
        return self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))

    def attention(self, text: Tensor, patches: Tensor) -> Tensor:
        """The attention probabilities forward applies, [B, heads, L, N] (for grounding maps; training never calls
        it): softmax over patches of q.k / sqrt(d/h), scaled_dot_product_attention's default scale."""
        q, k, _ = self._heads(text, patches)
        return torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1)


class MaskedSelfAttention(nn.Module):
    """Pre-LN self-attention whose keys at padded question positions are masked out (method §6.3.4)."""

    def __init__(self, dim: int, heads: int, eps: float):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, key_mask: Tensor) -> Tensor:
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(self.norm(x)).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        return self.proj(merge_heads(out))


class SGIHABlock(nn.Module):
    """One hidden-state level: filter -> cross-attention (+ previous level) -> self-attention -> MLP."""

    def __init__(self, dim: int, text_width: int, vision_width: int, cfg):
        """``dim``: the block's width, also the width of the global feature that guides its filter (method §6.3:
        d = the joint embedding width)."""
        super().__init__()
        self.filter = None if cfg.filter == "none" else NoiseFilter(
            dim, vision_width, residual=cfg.filter == "res", eps=cfg.filter_ln_eps)
        self.cross = CrossAttention(dim, text_width, vision_width, cfg.heads, cfg.ln_eps)
        self.self_attn = MaskedSelfAttention(dim, cfg.heads, cfg.ln_eps)
        self.mlp = nn.Sequential(nn.LayerNorm(dim, eps=cfg.ln_eps), nn.Linear(dim, dim * cfg.mlp_ratio), nn.GELU(),
                                 nn.Linear(dim * cfg.mlp_ratio, dim))

    def forward(self, visual: Tensor, text: Tensor, global_feat: Tensor, key_mask: Tensor,
                previous: Tensor | None) -> Tensor:
        if self.filter is not None:
            visual = self.filter(visual, global_feat)
        h = self.cross(text, visual[:, 1:])  # patch tokens only: the CLS token is left out
        if previous is not None:
            h = h + previous
        h = h + self.self_attn(h, key_mask)
        return h + self.mlp(h)


class SGIHAHead(nn.Module):
    """Blocks over the tapped hidden states in ``layers`` order, then Z = Linear(LN(H)[:, SOT]) (method §6.3)."""

    def __init__(self, cfg):
        super().__init__()
        s, b = cfg.sgiha, cfg.backbone
        dim = b.embed_dim  # method §6.3: d = 512, the joint embedding width
        self.layers = tuple(s.layers)
        self.grad_checkpoint = cfg.grad_checkpoint
        self.blocks = nn.ModuleList(SGIHABlock(dim, b.text_width, b.vision_width, s)
                                    for _ in self.layers)
        self.blocks.apply(lambda m: init_block_module_(m, s.init_std))
        self.norm = nn.LayerNorm(dim, eps=s.ln_eps)
        self.proj = nn.Linear(dim, b.embed_dim)

    def forward(self, global_feat: Tensor, visual_hidden: Mapping[int, Tensor], text_hidden: Mapping[int, Tensor],
                question_mask: Tensor) -> Tensor:
        """Z [B, embed_dim] from image hidden states [B, N, Wv], question hidden states [B, L, Wt]."""
        key_mask = question_mask.bool()
        recompute = self.grad_checkpoint and torch.is_grad_enabled()
        h = None
        for layer, block in zip(self.layers, self.blocks):
            args = (visual_hidden[layer], text_hidden[layer], global_feat, key_mask, h)
            h = checkpoint(block, *args, use_reentrant=False) if recompute else block(*args)
        return self.proj(self.norm(h)[:, 0])


def init_block_module_(module: nn.Module, std: float) -> None:
    """method §6.3 init: Linear weights truncated normal, biases 0; LayerNorm 1 / 0."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
