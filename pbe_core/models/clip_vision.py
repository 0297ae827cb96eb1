"""The CLIP ViT vision tower (ViT-L/14 in Paint by Example), in Hugging Face's parameter names.

Our own module, not transformers' CLIPVisionModel: importing that takes 2.3-2.9 s of a 2-core
CLI edit. The names are transformers 4's (`vision_model.*`, as the released checkpoint nests
them); the call is the same: `tower(pixel_values=...)` gives `pooler_output`, the
post-LayerNorm class token, and `last_hidden_state`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .configs import EncoderConfig

LAYER_NORM_EPS = 1e-5


@dataclass
class CLIPVisionOutput:
    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor


class CLIPAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(width, width) for _ in range(3))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (rearrange(p(x), "b n (h d) -> b h n d", h=self.heads) for p in (self.q_proj, self.k_proj, self.v_proj))
        return self.out_proj(rearrange(F.scaled_dot_product_attention(q, k, v), "b h n d -> b n (h d)"))


class CLIPMLP(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        return self.fc2(x * torch.sigmoid(1.702 * x))  # quick_gelu, as CLIP was trained


class CLIPEncoderLayer(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.self_attn = CLIPAttention(config.hidden_size, config.num_heads)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=LAYER_NORM_EPS)
        self.mlp = CLIPMLP(config.hidden_size, config.intermediate_size)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(config) for _ in range(config.num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class CLIPVisionEmbeddings(nn.Module):
    """Class token + one token per patch, each plus its learned position."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        width, patch = config.hidden_size, config.patch_size
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.patch_embedding = nn.Conv2d(config.num_channels, width, patch, stride=patch, bias=False)
        positions = (config.image_size // patch) ** 2 + 1  # drawn in _init_like_clip, not here
        self.position_embedding = nn.Embedding(positions, width, _weight=torch.empty(positions, width))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        patches = rearrange(patches, "b c h w -> b (h w) c")
        token = self.class_embedding.expand(patches.shape[0], 1, -1)
        return torch.cat([token, patches], dim=1) + self.position_embedding.weight


class CLIPVisionTransformer(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=LAYER_NORM_EPS)  # sic: CLIP's name
        self.encoder = CLIPEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=LAYER_NORM_EPS)

    def forward(self, pixel_values: torch.Tensor) -> CLIPVisionOutput:
        hidden = self.encoder(self.pre_layrnorm(self.embeddings(pixel_values)))
        return CLIPVisionOutput(hidden, self.post_layernorm(hidden[:, 0]))


class CLIPVisionTower(nn.Module):
    """`vision_model.*` and a `config` with `image_size`, as Hugging Face's CLIPVisionModel."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.vision_model = CLIPVisionTransformer(config)
        self._init_like_clip()

    def _init_like_clip(self) -> None:
        """CLIP's initialisation (Hugging Face's, factor 1): trained from scratch (the toy model),
        the tower learns as CLIP's does; loading weights replaces it all."""
        if self.vision_model.embeddings.class_embedding.is_meta:  # built to be loaded: nothing to draw
            return  # (and normal_ on the meta device imports torch._dynamo: 1.1 s)
        width, depth = self.config.hidden_size, self.config.num_layers
        embeddings = self.vision_model.embeddings
        nn.init.normal_(embeddings.class_embedding, std=width**-0.5)
        nn.init.normal_(embeddings.patch_embedding.weight, std=0.02)
        nn.init.normal_(embeddings.position_embedding.weight, std=0.02)
        in_std = width**-0.5 * (2 * depth) ** -0.5
        for layer in self.vision_model.encoder.layers:
            attention, mlp = layer.self_attn, layer.mlp
            for linear, std in ((attention.q_proj, in_std), (attention.k_proj, in_std), (attention.v_proj, in_std),
                                (attention.out_proj, width**-0.5), (mlp.fc1, (2 * width) ** -0.5), (mlp.fc2, in_std)):
                nn.init.normal_(linear.weight, std=std)
                nn.init.zeros_(linear.bias)

    def forward(self, pixel_values: torch.Tensor) -> CLIPVisionOutput:
        return self.vision_model(pixel_values)
