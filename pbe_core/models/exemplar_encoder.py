"""The exemplar encoder: CLIP vision tower -> class token -> mapper -> final LN -> projection.

Parameter names follow the released checkpoint: `transformer.vision_model.*` (Hugging Face CLIP,
under `cond_stage_model.`; `clip_vision` is that tower), `mapper.resblocks.N.*`, `final_ln.*` and, at the checkpoint's top
level, `proj_out.*` and `learnable_vector` (the unconditional context for guidance).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .clip_vision import CLIPVisionTower
from .configs import EncoderConfig


class MapperAttention(nn.Module):
    """Self-attention with q, k, v fused in one Linear, laid out [q | k | v] per head."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.c_qkv = nn.Linear(width, width * 3)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = rearrange(self.c_qkv(x), "b n (h d) -> b h n d", h=self.heads)
        q, k, v = qkv.chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.c_proj(rearrange(out, "b h n d -> b n (h d)"))


class MapperMLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, width * 4)
        self.c_proj = nn.Linear(width * 4, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class MapperBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = MapperAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = MapperMLP(width)
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Mapper(nn.Module):
    def __init__(self, width: int, depth: int, heads: int = 1):
        super().__init__()
        self.resblocks = nn.ModuleList(MapperBlock(width, heads) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class ExemplarEncoder(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.transformer = CLIPVisionTower(config)
        self.mapper = Mapper(config.hidden_size, config.mapper_depth)
        self.final_ln = nn.LayerNorm(config.hidden_size)
        self.proj_out = nn.Linear(config.hidden_size, config.context_dim)
        self.learnable_vector = nn.Parameter(torch.zeros(1, 1, config.context_dim))

    @property
    def dtype(self) -> torch.dtype:
        return self.proj_out.weight.dtype

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """CLIP-normalised exemplars (B, 3, 224, 224) -> context (B, 1, context_dim)."""
        pixel_values = pixel_values.to(device=self.proj_out.weight.device, dtype=self.dtype)
        # The pooled output is the post-LayerNorm class token, the only token the method keeps.
        return self.project(self.transformer(pixel_values=pixel_values).pooler_output)

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """The CLIP tower's pooled class token (B, hidden) -> context (B, 1, context_dim): the
        trained part of the encoder (training runs the frozen tower apart, without gradients)."""
        return self.proj_out(self.final_ln(self.mapper(pooled[:, None, :])))

    def unconditional(self, batch_size: int) -> torch.Tensor:
        """The learned unconditional context (B, 1, context_dim) for classifier-free guidance."""
        return self.learnable_vector.expand(batch_size, -1, -1)
