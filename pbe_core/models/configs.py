"""Model configs, and their inference from a state dict's tensor shapes.

Every size is read from the weights; only what shapes cannot tell follows the families' rules:
CLIP heads = hidden / 64, SD 1.x UNet 8 heads, mapper 1 head.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

StateDict = Mapping[str, torch.Tensor]


class ConfigError(ValueError):
    """The weights do not describe a model of the expected family."""


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 9
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[bool, ...] = (True, True, True, False)
    num_heads: int = 8
    transformer_depth: int = 1
    context_dim: int = 768


@dataclass(frozen=True)
class VAEConfig:
    in_channels: int = 3
    out_channels: int = 3
    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    scaling_factor: float = 0.18215


@dataclass(frozen=True)
class EncoderConfig:
    """CLIP ViT-L/14 vision tower + mapper + projection, by default."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_layers: int = 24
    num_heads: int = 16
    image_size: int = 224
    patch_size: int = 14
    num_channels: int = 3
    mapper_depth: int = 5
    context_dim: int = 768

    def clip_config(self):
        """The Hugging Face config of this tower, for the config.json of a written diffusers folder."""
        from transformers import CLIPVisionConfig

        return CLIPVisionConfig(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_channels=self.num_channels,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
        )


def _require(sd: StateDict, key: str, what: str) -> torch.Tensor:
    if key not in sd:
        raise ConfigError(f"{what}: missing tensor '{key}'")
    return sd[key]


def _count(sd: StateDict, pattern: str) -> int:
    """Number of distinct integer indices N for keys matching pattern with a (\\d+) group."""
    regex = re.compile(pattern)
    return len({int(m.group(1)) for key in sd if (m := regex.match(key))})


def infer_unet_config(sd: StateDict) -> UNetConfig:
    """From a UNet state dict in original key names (no `model.diffusion_model.` prefix)."""
    what = "UNet"
    conv_in = _require(sd, "input_blocks.0.0.weight", what)
    base = conv_in.shape[0]
    n_input = _count(sd, r"input_blocks\.(\d+)\.")
    downsamples = [i for i in range(n_input) if f"input_blocks.{i}.0.op.weight" in sd]
    levels = len(downsamples) + 1
    res_blocks, remainder = divmod(n_input - 1 - len(downsamples), levels)
    if remainder or res_blocks < 1:
        raise ConfigError(f"{what}: {n_input} input blocks do not form a regular SD 1.x UNet")
    channel_mult, attention = [], []
    for level in range(levels):
        first = 1 + level * (res_blocks + 1)
        width = _require(sd, f"input_blocks.{first}.0.out_layers.3.weight", what).shape[0]
        channel_mult.append(width // base)
        attention.append(f"input_blocks.{first}.1.proj_in.weight" in sd)
    context = _require(sd, "middle_block.1.transformer_blocks.0.attn2.to_k.weight", what)
    return UNetConfig(
        in_channels=conv_in.shape[1],
        out_channels=_require(sd, "out.2.weight", what).shape[0],
        model_channels=base,
        channel_mult=tuple(channel_mult),
        num_res_blocks=res_blocks,
        attention_levels=tuple(attention),
        num_heads=8,
        transformer_depth=_count(sd, r"middle_block\.1\.transformer_blocks\.(\d+)\."),
        context_dim=context.shape[1],
    )


def infer_vae_config(sd: StateDict) -> VAEConfig:
    """From a VAE state dict in original key names (no `first_stage_model.` prefix)."""
    what = "VAE"
    conv_in = _require(sd, "encoder.conv_in.weight", what)
    base = conv_in.shape[0]
    levels = _count(sd, r"encoder\.down\.(\d+)\.")
    widths = [
        _require(sd, f"encoder.down.{level}.block.0.conv1.weight", what).shape[0]
        for level in range(levels)
    ]
    quant = _require(sd, "quant_conv.weight", what)
    return VAEConfig(
        in_channels=conv_in.shape[1],
        out_channels=_require(sd, "decoder.conv_out.weight", what).shape[0],
        base_channels=base,
        channel_mult=tuple(w // base for w in widths),
        num_res_blocks=_count(sd, r"encoder\.down\.0\.block\.(\d+)\."),
        z_channels=_require(sd, "decoder.conv_in.weight", what).shape[1],
        embed_dim=quant.shape[0] // 2,
    )


def infer_encoder_config(sd: StateDict) -> EncoderConfig:
    """From an exemplar-encoder state dict: `transformer.vision_model.*`, `mapper.*`, `final_ln.*`,
    `proj_out.*`, `learnable_vector`."""
    what = "exemplar encoder"
    clip = "transformer.vision_model."
    patch = _require(sd, clip + "embeddings.patch_embedding.weight", what)
    positions = _require(sd, clip + "embeddings.position_embedding.weight", what).shape[0]
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise ConfigError(f"{what}: {positions} position embeddings are not a square grid + 1")
    hidden = patch.shape[0]
    return EncoderConfig(
        hidden_size=hidden,
        intermediate_size=_require(sd, clip + "encoder.layers.0.mlp.fc1.weight", what).shape[0],
        num_layers=_count(sd, re.escape(clip) + r"encoder\.layers\.(\d+)\."),
        num_heads=max(1, hidden // 64),
        image_size=grid * patch.shape[2],
        patch_size=patch.shape[2],
        num_channels=patch.shape[1],
        mapper_depth=_count(sd, r"mapper\.resblocks\.(\d+)\."),
        context_dim=_require(sd, "proj_out.weight", what).shape[0],
    )
