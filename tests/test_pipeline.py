"""The whole edit: parity with diffusers' PaintByExamplePipeline, deliberate differences, seeds,
untouched pixels, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from pbe_core.models import cpu_packing
from pbe_core.pipeline import Interrupted, PaintByExample

SIZE = 64


def scene(size: int = SIZE, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, size, dtype=np.float32)[None, :, None] * np.ones((size, 1, 3))
    noise = rng.normal(0, 30, (size, size, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def box_mask(size: int = SIZE, box=(16, 20, 44, 52)) -> Image.Image:
    mask = np.zeros((size, size), np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 255
    return Image.fromarray(mask)


def exemplar(width: int = 48, height: int = 32) -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def pipe(tiny):
    return PaintByExample(tiny, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def diffusers_pipe(tiny_paths):
    diffusers = pytest.importorskip("diffusers")
    from diffusers.pipelines.deprecated.paint_by_example import PaintByExampleImageEncoder
    from transformers import CLIPImageProcessor

    folder = tiny_paths["diffusers"]
    return diffusers.PaintByExamplePipeline(
        vae=diffusers.AutoencoderKL.from_pretrained(folder / "vae"),
        image_encoder=PaintByExampleImageEncoder.from_pretrained(folder / "image_encoder"),
        unet=diffusers.UNet2DConditionModel.from_pretrained(folder / "unet"),
        scheduler=diffusers.PNDMScheduler.from_pretrained(folder / "scheduler"),
        feature_extractor=CLIPImageProcessor.from_pretrained(folder / "feature_extractor"),
        safety_checker=None,
        requires_safety_checker=False,
    )


def run_diffusers(pipeline, scheduler: str, steps: int, seed: int, output_type: str):
    import diffusers

    schedulers = {"ddim": diffusers.DDIMScheduler, "plms": diffusers.PNDMScheduler}
    pipeline.scheduler = schedulers[scheduler].from_config(pipeline.scheduler.config)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline(
        image=scene(),
        mask_image=box_mask(),
        example_image=exemplar(),
        height=SIZE,
        width=SIZE,
        num_inference_steps=steps,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(seed),
        output_type=output_type,
    ).images


@pytest.mark.parametrize("sampler", ["ddim", "plms"])
def test_compat_mode_matches_diffusers(pipe, diffusers_pipe, sampler):
    steps, seed = 8, 3
    ours = pipe.run(
        scene(), box_mask(), exemplar(), sampler=sampler, steps=steps, seed=seed,
        guidance=5.0, region="full", compat="diffusers", feather=0,
    )
    latents = run_diffusers(diffusers_pipe, sampler, steps, seed, "latent")
    assert ours.latents.shape == latents.shape
    # fp32 rounding at the latents' scale (the tiny random model's reach 30), whichever CPU
    # kernels run: 1e-4 absolute was met on AVX512 machines and missed by 7% on an AVX2 one
    scale = max(1.0, latents.abs().max().item())
    assert (ours.latents - latents).abs().max().item() < 1e-5 * scale
    theirs = np.asarray(run_diffusers(diffusers_pipe, sampler, steps, seed, "pil")[0]).astype(int)
    decoded = (ours.decoded[0].permute(1, 2, 0).numpy() * 255).round().astype(int)
    assert np.abs(decoded - theirs).max() <= 1
    assert np.abs(decoded - np.asarray(scene())).mean() > 5  # the edit changed something


def test_default_mode_differs_from_diffusers_on_purpose(pipe):
    """Bilinear latent mask and squashed exemplar (the reference) vs nearest and crop (diffusers)."""
    common = dict(sampler="ddim", steps=4, seed=0, region="full", feather=0)
    box = (13, 19, 45, 51)  # edges off the 8-pixel grid: soft latent mask border
    reference = pipe.run(scene(), box_mask(box=box), exemplar(), **common)
    compat = pipe.run(scene(), box_mask(box=box), exemplar(), compat="diffusers", **common)
    assert (reference.latents - compat.latents).abs().max() > 1e-3
    squashed = pipe.encode_exemplars(exemplar(), mode="squash")
    cropped = pipe.encode_exemplars(exemplar(), mode="crop")
    assert (squashed - cropped).abs().max() > 1e-4


@pytest.mark.parametrize("region", ["auto", "full"])
def test_pixels_outside_the_mask_are_untouched(pipe, region):
    grow, feather = 2, 3
    [result] = pipe.edit(
        scene(), box_mask(), exemplar(), steps=3, region=region, resolution=64, grow=grow, feather=feather
    )
    before, after = np.asarray(scene()), np.asarray(result)
    outside = np.ones((SIZE, SIZE), bool)
    margin = grow + feather
    outside[20 - margin : 52 + margin, 16 - margin : 44 + margin] = False
    assert np.array_equal(before[outside], after[outside])
    assert np.abs(before[~outside].astype(int) - after[~outside]).mean() > 5


def test_batch_uses_seed_plus_index(pipe):
    options = dict(steps=3, sampler="ddim", region="full")
    batch = pipe.run(scene(), box_mask(), exemplar(), seed=10, batch_size=2, **options)
    second = pipe.run(scene(), box_mask(), exemplar(), seed=11, **options)
    assert torch.allclose(batch.latents[1:], second.latents, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(batch.latents[0], batch.latents[1])


def test_explicit_noise_overrides_seed(pipe):
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    options = dict(steps=2, sampler="ddim", region="full", noise=noise)
    a = pipe.run(scene(), box_mask(), exemplar(), seed=1, **options)
    b = pipe.run(scene(), box_mask(), exemplar(), seed=2, **options)
    assert torch.equal(a.latents, b.latents)


def test_every_sampler_runs_and_reports_progress(pipe):
    for sampler in ("plms", "ddim", "euler", "euler_a", "dpmpp_2m"):
        steps_seen = []
        pipe.run(
            scene(), box_mask(), exemplar(), steps=3, sampler=sampler, region="full",
            callback=lambda step, total, x0, seen=steps_seen: seen.append((step, total)),
        )
        assert steps_seen == [(0, 3), (1, 3), (2, 3)], sampler


def test_empty_mask_returns_the_input(pipe):
    with pytest.warns(UserWarning, match="mask is empty"):
        [result] = pipe.edit(scene(), Image.new("L", (SIZE, SIZE), 0), exemplar(), steps=2)
    assert np.array_equal(np.asarray(result), np.asarray(scene()))


def test_should_stop_interrupts(pipe):
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(Interrupted):
        pipe.edit(scene(), box_mask(), exemplar(), steps=5, should_stop=stop)


def test_huge_image_small_mask_edits_only_the_region(pipe):
    size = 2048
    mask = np.zeros((size, size), np.uint8)
    mask[1000:1016, 1500:1520] = 255
    big = Image.new("RGB", (size, size), (90, 120, 150))
    result = pipe.run(big, Image.fromarray(mask), exemplar(), steps=2, resolution=64)
    assert max(result.decoded.shape[-2:]) == 64  # the model only saw the crop
    assert result.images.shape[-2:] == (size, size)


def test_negative_exemplar_and_blend(pipe):
    options = dict(steps=2, sampler="ddim", region="full", seed=0)
    plain = pipe.run(scene(), box_mask(), exemplar(), **options)
    negative = pipe.run(scene(), box_mask(), exemplar(), negative_exemplar=scene(), **options)
    assert (plain.latents - negative.latents).abs().max() > 1e-3
    blended = pipe.encode_exemplars([exemplar(), scene()], weights=[1.0, 0.0])
    assert torch.allclose(blended, pipe.encode_exemplars(exemplar()), atol=1e-6)


def test_bad_inputs_name_the_argument(pipe):
    nan_image = torch.full((1, SIZE, SIZE, 3), float("nan"))
    with pytest.raises(ValueError, match="image"):
        pipe.edit(nan_image, box_mask(), exemplar(), steps=1)
    with pytest.raises(ValueError, match="batch sizes"):
        pipe.edit([scene(), scene(seed=1), scene(seed=2)], box_mask(), [exemplar(), exemplar()], steps=1)
    with pytest.raises(ValueError, match="sampler"):
        pipe.edit(scene(), box_mask(), exemplar(), sampler="heun")
    with pytest.raises(ValueError, match="aspect"):
        pipe.edit(scene(), Image.new("L", (SIZE, SIZE // 2), 255), exemplar(), steps=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe.edit(scene(), box_mask(size=SIZE * 2, box=(32, 40, 88, 104)), exemplar(), steps=1)
    assert any("resizing mask" in str(w.message) for w in caught)


def test_odd_sizes_and_modes(pipe):
    for picture in (Image.new("RGBA", (37, 29), (10, 200, 30, 128)), Image.new("P", (37, 29)), Image.new("I;16", (37, 29), 30000)):
        mask = Image.new("L", picture.size, 255)  # a full mask edits everything
        [result] = pipe.edit(picture, mask, exemplar(), steps=1, region="full")
        assert result.size == picture.size
    [tiny] = pipe.edit(Image.new("RGB", (1, 1)), Image.new("L", (1, 1), 255), exemplar(), steps=1)
    assert tiny.size == (1, 1)


@pytest.mark.parametrize("layout", ["safetensors", "ckpt"])
def test_one_shot_gives_the_same_edit_and_frees_each_model(tiny_paths, layout):
    options = dict(steps=3, sampler="ddim", region="full", seed=3)
    eager = PaintByExample.from_pretrained(tiny_paths[layout], device="cpu", dtype=torch.float32)
    eager = eager.run(scene(), box_mask(), exemplar(), **options)
    once = PaintByExample.from_pretrained(tiny_paths[layout], device="cpu", dtype=torch.float32, one_shot=True)
    assert next(once.models.unet.parameters()).dtype == torch.float32  # as the file holds it until used
    result = once.run(scene(), box_mask(), exemplar(), **options)
    # the one-shot UNet ran with packed weights (cpu_packing), where this torch has them
    assert cpu_packing.is_packed(once.models.unet) == cpu_packing.supported(torch.float32)
    assert (result.images - eager.images).abs().max() < 1e-4
    freed = (once.models.encoder, once.models.vae.encoder, once.models.unet)
    assert all(p.is_meta for model in freed for p in model.parameters())
    assert not any(p.is_meta for p in once.models.vae.decoder.parameters())
    with pytest.raises(RuntimeError, match="load it again"):
        once.run(scene(), box_mask(), exemplar(), **options)


def test_one_shot_casts_each_model_when_the_edit_reaches_it(tiny_paths):
    once = PaintByExample.from_pretrained(tiny_paths["safetensors"], device="cpu", dtype=torch.bfloat16, one_shot=True)
    assert next(once.models.unet.parameters()).dtype == torch.float32
    result = once.run(scene(), box_mask(), exemplar(), steps=2, region="full")
    assert next(once.models.unet.parameters()).dtype == torch.bfloat16 and torch.isfinite(result.images).all()
    assert once.models.vae.decoder.conv_in.weight.dtype == torch.bfloat16


def test_one_shot_keeps_the_tower_when_candidates_are_ranked(tiny_paths):
    once = PaintByExample.from_pretrained(tiny_paths["safetensors"], device="cpu", one_shot=True)
    result = once.run(scene(), box_mask(), exemplar(), steps=2, region="full", candidates=2)
    assert result.scores is not None and len(result.scores) == 2
