"""The whole Paint by Example edit, host-free: load once, edit many.

    pipe = PaintByExample.from_pretrained("model.ckpt")
    [result] = pipe.edit(photo, mask, exemplar, seed=0)

The user's mask (white = edit) is cropped with the image by `regions`, turned into the model's
keep-mask once by `prepare.edit_to_keep_mask`, and the edit is stitched back so that every pixel
outside the (grown, feathered) mask is the input's own.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from PIL import Image

from . import colour, conditioning, prepare, regions, sampling
from .checkpoint import Models, load_models

Compat = Literal["diffusers"] | None
StepCallback = Callable[[int, int, torch.Tensor], None]


class Interrupted(Exception):
    """The caller's `should_stop` asked to stop; nothing was produced."""


@dataclass
class EditResult:
    images: torch.Tensor  # (B, 3, H, W) in [0, 1]: the input with the region stitched back
    decoded: torch.Tensor  # (B, 3, h, w) in [0, 1]: the model's output at working size
    latents: torch.Tensor  # (B, 4, h/8, w/8): the sampled latents, scaled
    region: regions.Region


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


def _seed_generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(int(seed))


class PaintByExample:
    def __init__(self, models: Models, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.models = models
        self.device = torch.device(device)
        self.dtype = dtype
        self.schedule = sampling.scaled_linear_schedule()
        self.to(self.device)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> PaintByExample:
        """Any layout `pbe_core.checkpoint` reads. Defaults: cuda > mps > cpu; fp16 on GPUs, fp32 on CPU."""
        device = torch.device(device) if device is not None else default_device()
        dtype = dtype or default_dtype(device)
        if device.type == "cpu" and dtype == torch.float16:
            raise ValueError("dtype float16 is not supported on the CPU; use float32 or bfloat16")
        return cls(load_models(path, dtype=dtype, device="cpu"), device=device, dtype=dtype)

    def to(self, device: str | torch.device) -> PaintByExample:
        self.device = torch.device(device)
        for model in (self.models.unet, self.models.vae, self.models.encoder):
            model.to(device=self.device, dtype=self.dtype)
        return self

    # -----------------------------------------------------------------------------------------

    @torch.inference_mode()
    def encode_exemplars(
        self,
        exemplar,
        *,
        mode: prepare.ExemplarMode = "squash",
        exemplar_mask=None,
        weights: Sequence[float] | None = None,
    ) -> torch.Tensor:
        """Exemplar picture(s) -> context (N, 1, ctx); with `weights`, one blended (1, 1, ctx)."""
        encoder = self.models.encoder
        # Each exemplar is prepared alone: a list may hold pictures of different sizes.
        exemplars = exemplar if isinstance(exemplar, (list, tuple)) else [exemplar]
        masks = exemplar_mask if isinstance(exemplar_mask, (list, tuple)) else [exemplar_mask] * len(exemplars)
        if len(masks) != len(exemplars):
            raise ValueError(f"exemplar_mask has {len(masks)} entries for {len(exemplars)} exemplars")
        pixels = torch.cat([
            prepare.prepare_exemplar(picture, size=encoder.config.image_size, mode=mode, exemplar_mask=picture_mask)
            for picture, picture_mask in zip(exemplars, masks, strict=True)
        ])
        embeddings = encoder(pixels.to(self.device))
        return embeddings if weights is None else conditioning.blend_embeddings(embeddings, weights)

    def _unconditional(self, batch: int, negative_exemplar, negative_weight: float, mode) -> torch.Tensor:
        learned = self.models.encoder.unconditional(batch)
        negative = None if negative_exemplar is None else self.encode_exemplars(negative_exemplar, mode=mode)[:1]
        return conditioning.unconditional_context(learned, negative, negative_weight)

    @torch.inference_mode()
    def run(
        self,
        image,
        mask,
        exemplar,
        *,
        steps: int = 50,
        guidance: float = 5.0,
        sampler: str = "plms",
        seed: int = 0,
        eta: float = 0.0,
        batch_size: int = 1,
        noise: torch.Tensor | None = None,
        region: Literal["auto", "full"] = "auto",
        context: float = 1.5,
        resolution: int = 512,
        grow: int = 0,
        feather: int = 8,
        colour_match: float = 0.0,
        exemplar_mode: prepare.ExemplarMode | None = None,
        exemplar_mask=None,
        negative_exemplar=None,
        negative_weight: float = 1.0,
        exemplar_weights: Sequence[float] | None = None,
        compat: Compat = None,
        callback: StepCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> EditResult:
        """The edit as tensors; `edit` is the same returning PIL images. See `edit`."""
        if compat not in (None, "diffusers"):
            raise ValueError(f"compat must be None or 'diffusers'; got {compat!r}")
        if region not in ("auto", "full"):
            raise ValueError(f"region must be 'auto' or 'full'; got {region!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1; got {batch_size}")
        if sampler not in sampling.SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; valid: {', '.join(sampling.SAMPLERS)}")
        if not 0.0 <= colour_match <= 1.0:
            raise ValueError(f"colour_match must be a strength within 0..1; got {colour_match}")
        exemplar_mode = exemplar_mode or ("crop" if compat == "diffusers" else "squash")

        pixels = prepare.image_to_tensor(image, "image")
        edit_mask = prepare.fit_mask_to_image(prepare.mask_to_tensor(mask, "mask"), pixels.shape[-2:])
        cond = self.encode_exemplars(
            exemplar, mode=exemplar_mode, exemplar_mask=exemplar_mask, weights=exemplar_weights
        )
        pixels, edit_mask, cond = prepare.broadcast_batch(
            pixels, edit_mask, cond, names=("image", "mask", "exemplar")
        )
        if batch_size > 1:
            if pixels.shape[0] != 1:
                raise ValueError(
                    f"batch_size {batch_size} repeats one input; got {pixels.shape[0]} inputs"
                )
            pixels, edit_mask, cond = (t.expand(batch_size, *t.shape[1:]) for t in (pixels, edit_mask, cond))
        batch = pixels.shape[0]

        if torch.all(prepare.edit_to_keep_mask(edit_mask) == 1):
            warnings.warn("the mask is empty: nothing to edit, returning the input unchanged", stacklevel=3)
            empty = regions.plan_full(pixels.shape[-2:])
            return EditResult(pixels.clone(), pixels.clone(), torch.empty(0), empty)

        plan = (
            regions.plan_region(pixels.shape[-2:], edit_mask, context, resolution, margin=max(grow, 0) + feather)
            if region == "auto"
            else regions.plan_full(pixels.shape[-2:])
        )
        crop_pixels, crop_mask = regions.crop(pixels, edit_mask, plan)
        keep = prepare.edit_to_keep_mask(crop_mask)
        masked = prepare.masked_image(prepare.to_model_range(crop_pixels), keep)

        vae, unet = self.models.vae, self.models.unet
        latent_hw = (plan.height // 8, plan.width // 8)
        generators = [_seed_generator(seed + index) for index in range(batch)]
        if noise is None:
            noise = torch.cat([torch.randn((1, 4, *latent_hw), generator=g) for g in generators])
        elif tuple(noise.shape) != (batch, 4, *latent_hw):
            raise ValueError(f"noise must have shape {(batch, 4, *latent_hw)}; got {tuple(noise.shape)}")

        mean, std = vae.encode_moments(masked.to(self.device, self.dtype))
        if compat == "diffusers":  # diffusers samples the posterior after drawing the noise
            draws = torch.cat([torch.randn(m.shape, generator=g)[None] for m, g in zip(mean, generators, strict=True)])
            mean = mean + std * draws.to(mean)
        masked_latent = mean * vae.config.scaling_factor
        mask_mode = "nearest" if compat == "diffusers" else "bilinear"
        latent_keep = prepare.latent_keep_mask(keep, latent_hw, mode=mask_mode)
        concat = torch.cat([masked_latent, latent_keep.to(masked_latent)], dim=1)

        uncond = self._unconditional(batch, negative_exemplar, negative_weight, exemplar_mode)
        eps_model = sampling.guided_eps_model(unet, concat, cond.to(self.dtype), uncond.to(self.dtype), guidance)
        if should_stop is not None:
            inner = eps_model

            def eps_model(x, t):
                if should_stop():
                    raise Interrupted("stopped by the caller")
                return inner(x, t)

        options = {"generator": generators[0], "callback": callback}
        if sampler == "ddim":
            options["eta"] = eta
        latents = sampling.sample(
            sampler, eps_model, noise.to(self.device, self.dtype), self.schedule, steps, **options
        )
        decoded = ((vae.decode(latents / vae.config.scaling_factor).float() + 1) / 2).clamp(0, 1).cpu()
        images = regions.stitch(pixels, decoded, edit_mask, plan, grow=grow, feather=feather)
        if colour_match > 0:
            images = colour.colour_match(images, edit_mask, colour_match, grow=grow, feather=feather)
        return EditResult(images, decoded, latents.float().cpu(), plan)

    def edit(self, image, mask, exemplar, **options) -> list[Image.Image]:
        """Place the exemplar's object into the masked region of `image`.

        image, mask, exemplar: PIL images, numpy arrays or tensors (mask: white or 1 = edit).
        steps, guidance, sampler ("plms" | "ddim" | "euler" | "euler_a" | "dpmpp_2m"), eta (DDIM).
        seed: image i of a batch uses seed + i, each drawn as diffusers does (CPU generator,
        `randn` of the latent shape), so a seed reproduces across tools; `noise` overrides it.
        region "auto" crops around the mask (box grown by `context`, longer side `resolution`)
        and stitches back; "full" edits the whole image at its own size padded to a multiple of 8.
        grow, feather: the mask's growth and the feather radius (pixels) used to blend the edit in;
        pixels beyond them are the input's own, bit for bit. colour_match (0..1): move the edited
        region's colour statistics towards a ring of its surroundings (`pbe_core.colour`).
        exemplar_mode "squash" (the reference), "crop" (diffusers) or "pad"; exemplar_mask cuts
        the object out of its background; negative_exemplar replaces (weight 1) or blends with the
        learned unconditional vector; a list of exemplars with exemplar_weights blends them.
        compat "diffusers": nearest latent mask, cropped exemplar, sampled VAE posterior, as
        diffusers' PaintByExamplePipeline. callback(step, total, x0) after each step;
        should_stop() -> True raises Interrupted. An empty mask returns the input with a warning.
        """
        result = self.run(image, mask, exemplar, **options)
        return [prepare.to_pil(picture) for picture in result.images]
