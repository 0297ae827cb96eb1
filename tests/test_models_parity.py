"""Our models against diffusers' on the same tiny random weights, read through the real loaders."""

from __future__ import annotations

import pytest
import torch

from pbe_core.checkpoint import load_models, read_weights

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402

try:  # moved under pipelines.deprecated in diffusers 0.36
    from diffusers.pipelines.deprecated.paint_by_example import PaintByExampleImageEncoder
except ImportError:
    from diffusers.pipelines.paint_by_example import PaintByExampleImageEncoder

TOLERANCE = 1e-5


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


@pytest.fixture(scope="module")
def reference(tiny_paths):
    folder = tiny_paths["diffusers"]
    return {
        "unet": UNet2DConditionModel.from_pretrained(folder / "unet").eval(),
        "vae": AutoencoderKL.from_pretrained(folder / "vae").eval(),
        "encoder": PaintByExampleImageEncoder.from_pretrained(folder / "image_encoder").eval(),
    }


@pytest.mark.parametrize("layout", ["ckpt", "safetensors", "diffusers"])
def test_every_layout_loads_the_same_tensors(tiny, tiny_paths, layout):
    loaded = load_models(tiny_paths[layout])
    for name in ("unet", "vae", "encoder"):
        ours, theirs = getattr(tiny, name).state_dict(), getattr(loaded, name).state_dict()
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), f"{layout}: {name}.{key} differs"


def test_round_trip_original_diffusers_original(tiny_paths):
    original = read_weights(tiny_paths["ckpt"])
    via_diffusers = read_weights(tiny_paths["diffusers"])
    for name in ("unet", "vae", "encoder"):
        a, b = getattr(original, name), getattr(via_diffusers, name)
        assert a.keys() == b.keys(), name
        assert all(torch.equal(a[k], b[k]) for k in a), name


@torch.no_grad()
def test_unet_matches_diffusers(tiny, reference):
    generator = torch.Generator().manual_seed(1)
    latent = torch.randn(2, 9, 16, 24, generator=generator)
    context = torch.randn(2, 1, 32, generator=generator)
    timesteps = torch.tensor([981.0, 1.0])
    ours = tiny.unet(latent, timesteps, context)
    theirs = reference["unet"](latent, timesteps, encoder_hidden_states=context).sample
    assert ours.abs().mean() > 0.1  # not a degenerate comparison
    assert max_diff(ours, theirs) < TOLERANCE


@torch.no_grad()
def test_vae_matches_diffusers(tiny, reference):
    generator = torch.Generator().manual_seed(2)
    pixels = torch.rand(1, 3, 64, 48, generator=generator) * 2 - 1
    mean, std = tiny.vae.encode_moments(pixels)
    posterior = reference["vae"].encode(pixels).latent_dist
    assert max_diff(mean, posterior.mean) < TOLERANCE
    assert max_diff(std, posterior.std) < TOLERANCE
    latents = torch.randn(1, 4, 8, 6, generator=generator)
    assert max_diff(tiny.vae.decode(latents), reference["vae"].decode(latents).sample) < TOLERANCE


@torch.no_grad()
def test_encoder_matches_diffusers(tiny, reference):
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    embeddings, uncond = reference["encoder"](pixels, return_uncond_vector=True)
    ours = tiny.encoder(pixels)
    assert ours.shape == (3, 1, 32)
    assert ours.std() > 0.1
    assert max_diff(ours, embeddings) < TOLERANCE
    assert max_diff(tiny.encoder.unconditional(1), uncond) == 0.0


@torch.no_grad()
def test_class_token_is_what_reaches_the_mapper(tiny):
    """Changing any patch changes the output only through the pooled class token."""
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    pooled = tiny.encoder.transformer(pixel_values=pixels).pooler_output
    expected = tiny.encoder.proj_out(tiny.encoder.final_ln(tiny.encoder.mapper(pooled[:, None])))
    assert torch.equal(tiny.encoder(pixels), expected)


@torch.no_grad()
def test_unet_matches_diffusers_on_sizes_not_multiple_of_the_depth(tiny, reference):
    """Latents of 5x7 (e.g. a 40x56 crop): upsampling follows the skip connection's size."""
    generator = torch.Generator().manual_seed(5)
    latent = torch.randn(1, 9, 5, 7, generator=generator)
    context = torch.randn(1, 1, 32, generator=generator)
    timesteps = torch.tensor([500.0])
    ours = tiny.unet(latent, timesteps, context)
    theirs = reference["unet"](latent, timesteps, encoder_hidden_states=context).sample
    assert max_diff(ours, theirs) < TOLERANCE


@torch.no_grad()
def test_unet_activations_stay_contiguous(tiny):
    """A channels-last view leaking out of attention makes every later convolution copy its
    weights (1.6x slower on CPU, bench/pipeline_speed.py)."""
    seen = []
    hooks = [
        module.register_forward_pre_hook(lambda _m, args: seen.append(args[0].is_contiguous()))
        for module in tiny.unet.modules()
        if isinstance(module, torch.nn.Conv2d)
    ]
    try:
        tiny.unet(torch.randn(1, 9, 16, 16), torch.tensor([10.0]), torch.randn(1, 1, 32))
    finally:
        for hook in hooks:
            hook.remove()
    assert seen and all(seen)
