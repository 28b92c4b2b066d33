"""CLIP ViT image and text towers (method §3) with OpenAI's state-dict layout and optional layer taps."""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn

from model.transformer import Transformer, init_transformer_


class EncoderOutput(NamedTuple):
    """What one tower pass gives: the global feature, every projected token, the requested hidden states."""

    global_feat: Tensor  # [B, D]
    tokens: Tensor  # [B, N, D], all positions after ln_post / ln_final and the projection
    hidden: dict[int, Tensor]  # residual stream at the requested indices only (method §6.2)


def patch_grid(img_size: Sequence[int], patch_size: int, stride: int) -> tuple[int, int]:
    """(rows, cols) of patches the patch embedding produces; stride < patch gives overlapping patches."""
    height, width = img_size
    if height < patch_size or width < patch_size:
        raise ValueError(f"img_size {list(img_size)} is smaller than backbone.patch_size {patch_size}")
    return (height - patch_size) // stride + 1, (width - patch_size) // stride + 1


class VisionTransformer(nn.Module):
    """conv1 -> [CLS; patches] + positional -> ln_pre -> transformer -> ln_post -> @ proj (method §3)."""

    def __init__(self, img_size: Sequence[int], patch_size: int, stride: int, width: int, layers: int,
                 heads: int, output_dim: int, grad_checkpoint: bool = False):
        super().__init__()
        self.img_size = tuple(img_size)
        self.grid = patch_grid(img_size, patch_size, stride)
        scale = width ** -0.5  # OpenAI CLIP's init of the embeddings and projection
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=stride, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid[0] * self.grid[1] + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, grad_checkpoint=grad_checkpoint)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, images: Tensor, layers: Sequence[int] = ()) -> EncoderOutput:
        if tuple(images.shape[-2:]) != self.img_size:
            raise ValueError(f"images are {list(images.shape[-2:])} (H, W) but the backbone was built for "
                             f"img_size {list(self.img_size)}")
        x = self.conv1(images).flatten(2).transpose(1, 2)  # [B, rows*cols, width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x, hidden = self.transformer(self.ln_pre(x), layers)
        tokens = self.ln_post(x) @ self.proj
        return EncoderOutput(tokens[:, 0], tokens, hidden)


class CLIP(nn.Module):
    """OpenAI CLIP: ``visual`` image tower and the text tower's modules at the top level (OpenAI key names)."""

    def __init__(self, embed_dim: int, img_size: Sequence[int], patch_size: int, stride: int, vision_width: int,
                 vision_layers: int, vision_heads: int, context_length: int, vocab_size: int, text_width: int,
                 text_layers: int, text_heads: int, token_init_std: float, pos_init_std: float,
                 logit_scale_init: float, grad_checkpoint: bool = False):
        super().__init__()
        self.visual = VisionTransformer(img_size, patch_size, stride, vision_width, vision_layers, vision_heads,
                                        embed_dim, grad_checkpoint)
        self.token_embedding = nn.Embedding(vocab_size, text_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, text_width))
        self.transformer = Transformer(text_width, text_layers, text_heads, causal=True,
                                       grad_checkpoint=grad_checkpoint)
        self.ln_final = nn.LayerNorm(text_width)
        self.text_projection = nn.Parameter(torch.empty(text_width, embed_dim))
        # Kept for checkpoint compatibility; training uses the fixed scale 1 / temperature (method §5).
        self.logit_scale = nn.Parameter(torch.tensor(logit_scale_init))
        nn.init.normal_(self.token_embedding.weight, std=token_init_std)
        nn.init.normal_(self.positional_embedding, std=pos_init_std)
        nn.init.normal_(self.text_projection, std=text_width ** -0.5)
        init_transformer_(self.transformer, text_width)

    @classmethod
    def from_config(cls, cfg) -> "CLIP":
        """Randomly initialised backbone with the shapes of ``cfg.backbone``, ``img_size``, ``stride_size``."""
        b = cfg.backbone
        return cls(embed_dim=b.embed_dim, img_size=cfg.img_size, patch_size=b.patch_size, stride=cfg.stride_size,
                   vision_width=b.vision_width, vision_layers=b.vision_layers, vision_heads=b.vision_heads,
                   context_length=cfg.text_length, vocab_size=b.vocab_size, text_width=b.text_width,
                   text_layers=b.text_layers, text_heads=b.text_heads, token_init_std=b.token_init_std,
                   pos_init_std=b.pos_init_std, logit_scale_init=math.log(1.0 / cfg.temperature),
                   grad_checkpoint=cfg.grad_checkpoint)

    def image_features(self, images: Tensor, layers: Sequence[int] = ()) -> EncoderOutput:
        """Image tower: global feature = projected CLS token (method §3)."""
        return self.visual(images, layers)

    def text_features(self, ids: Tensor, layers: Sequence[int] = ()) -> EncoderOutput:
        """Text tower: global feature = projected token at the EOT position, the largest id (method §3)."""
        length = ids.shape[1]
        if length > self.positional_embedding.shape[0]:
            raise ValueError(f"token sequences of length {length} exceed text_length "
                             f"{self.positional_embedding.shape[0]}")
        x = self.token_embedding(ids) + self.positional_embedding[:length]
        x, hidden = self.transformer(x, layers)
        tokens = self.ln_final(x) @ self.text_projection
        eot = ids.argmax(dim=-1)
        return EncoderOutput(tokens[torch.arange(ids.shape[0], device=ids.device), eot], tokens, hidden)

    def encode_image(self, images: Tensor) -> Tensor:
        """Global image features [B, D] (retrieval)."""
        return self.image_features(images).global_feat

    def encode_text(self, ids: Tensor) -> Tensor:
        """Global text features [B, D] (retrieval)."""
        return self.text_features(ids).global_feat

    def forward(self, images: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Global image and text features, as OpenAI's model returns its embeddings."""
        return self.encode_image(images), self.encode_text(ids)
