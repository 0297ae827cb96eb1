"""Tiny random-weight Paint by Example models in every layout, for tests and benchmarks.

Every parameter is random, including those the reference initialises to zero (output convs,
attention projections): with zeros there, a parity test would compare zeros with zeros.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from .checkpoint import (
    Models,
    Weights,
    save_diffusers,
    save_original_ckpt,
    save_single_file,
    weights_of,
)
from .models.configs import EncoderConfig, UNetConfig, VAEConfig
from .models.exemplar_encoder import ExemplarEncoder
from .models.unet import UNet
from .models.vae import AutoencoderKL

# Small, but with every structural feature: attention and plain levels, skip convs, resamplers,
# a VAE with the real factor 8, a CLIP tower of 4 layers so that diffusers' mapper
# ((layers + 1) // 5 blocks) has one block as ours does.
TINY_UNET = UNetConfig(
    model_channels=32,
    channel_mult=(1, 2, 2),
    num_res_blocks=2,
    attention_levels=(True, True, False),
    context_dim=32,
)
TINY_VAE = VAEConfig(base_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=1)
TINY_ENCODER = EncoderConfig(
    hidden_size=64,
    intermediate_size=128,
    num_layers=4,
    num_heads=1,
    image_size=32,
    patch_size=8,
    mapper_depth=1,
    context_dim=32,
)
LAYOUT_WRITERS = {
    "ckpt": lambda weights, root: save_original_ckpt(weights, root / "model.ckpt"),
    "safetensors": lambda weights, root: save_single_file(weights, root / "model.safetensors"),
    "diffusers": lambda weights, root: save_diffusers(weights, root / "diffusers"),
}


def randomize(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Random values for every parameter, scaled so activations stay of order one."""
    with torch.no_grad():
        for module in model.modules():
            is_norm = isinstance(module, nn.LayerNorm | nn.GroupNorm)
            for name, param in module.named_parameters(recurse=False):
                noise = torch.randn(param.shape, generator=generator)
                if is_norm and name == "weight":
                    param.copy_(1.0 + 0.1 * noise)
                elif param.ndim >= 2:
                    param.copy_(noise / math.sqrt(math.prod(param.shape[1:])))
                else:
                    param.copy_(0.1 * noise)
    return model


def tiny_models(seed: int = 0, unet=TINY_UNET, vae=TINY_VAE, encoder=TINY_ENCODER) -> Models:
    generator = torch.Generator().manual_seed(seed)
    models = Models(
        unet=randomize(UNet(unet), generator),
        vae=randomize(AutoencoderKL(vae), generator),
        encoder=randomize(ExemplarEncoder(encoder), generator),
        layout="original",
    )
    for model in (models.unet, models.vae, models.encoder):
        model.eval().requires_grad_(False)
    return models


def tiny_weights(seed: int = 0) -> Weights:
    return weights_of(tiny_models(seed))


def write_layout(weights: Weights, layout: str, root: str | Path) -> Path:
    """Write weights as `ckpt` (Lightning pickle), `safetensors` (single file) or `diffusers`."""
    if layout not in LAYOUT_WRITERS:
        raise ValueError(f"layout must be one of {sorted(LAYOUT_WRITERS)}, not {layout!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return LAYOUT_WRITERS[layout](weights, root)
