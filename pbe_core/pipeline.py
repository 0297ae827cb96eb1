"""The whole Paint by Example edit, host-free: load once, edit many.

    pipe = PaintByExample.from_pretrained("model.ckpt")
    [result] = pipe.edit(photo, mask, exemplar, seed=0)

The edit's sequence is `pbe_core.conductor`'s, shared with the hosts; here are pbe_core's own
parts for it (`CoreParts`: its VAE, samplers and guidance) and the loaded models. The user's
mask (white = edit) is cropped with the image by `regions`, turned into the model's keep-mask
once by `prepare.edit_to_keep_mask`, and the edit is stitched back so that every pixel outside
the (grown, feathered) mask is the input's own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from PIL import Image

from . import conductor, memory, prepare, sampling
from .checkpoint import Models, load_models
from .conductor import EditResult, SampleJob
from .evaluate import region_clip_score
from .models import cpu_packing
from .options import EditOptions, cpu_has_native_bf16, resolve_device

Compat = Literal["diffusers"] | None
StepCallback = Callable[[int, int, torch.Tensor], None]


class Interrupted(Exception):
    """The caller's `should_stop` asked to stop; nothing was produced."""


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on GPUs; on the CPU bf16 where it is native, else fp32."""
    if device.type in ("cuda", "mps"):
        return torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def _seed_generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(int(seed))


@dataclass
class CoreParts:
    """pbe_core's parts of the edit: its VAE, its samplers with guidance, on one device.

    Noise: image i is drawn from a CPU generator seeded with job.seeds[i], `randn` of the latent
    shape, as diffusers does, so a seed reproduces across tools; `noise` overrides it.
    compat "diffusers": nearest latent mask and the VAE posterior sampled after the noise.
    Each model is moved to the device and dtype when first used (a no-op once it is there);
    one_shot frees each once the edit is past it (exemplar encoder and VAE encoder before
    sampling, UNet before decoding), so only the one in use is resident; they cannot be used again.
    On the CPU, one_shot also packs the UNet's weights for oneDNN at the first step
    (`models.cpu_packing`; guided 256 px step, fp32: 0.45x the eager time on an AVX512 CPU,
    0.80x on an AVX2 one) instead of letting every step reorder them.
    """

    models: Models
    device: torch.device
    dtype: torch.dtype
    schedule: sampling.Schedule
    sampler: str = "plms"
    steps: int = 50
    guidance: float = 5.0
    eta: float = 0.0
    noise: torch.Tensor | None = None
    compat: Compat = None
    callback: StepCallback | None = None
    should_stop: Callable[[], bool] | None = None
    one_shot: bool = False

    def _ready(self, model: torch.nn.Module) -> torch.nn.Module:
        with torch.inference_mode(False):  # cast weights must stay ordinary parameters
            return model.to(device=self.device, dtype=self.dtype)

    def _free(self, *models: torch.nn.Module) -> None:
        if self.one_shot:
            with torch.inference_mode(False):
                for model in models:  # to the meta device: the weights' storage (or file mapping) goes
                    cpu_packing.release(model)
                    model.to("meta")

    @property
    def exemplar_size(self) -> int:
        return self.models.encoder.config.image_size

    @property
    def clip_tower(self) -> torch.nn.Module:
        return self.models.encoder.transformer

    def encode_exemplars(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._ready(self.models.encoder)(pixels.to(self.device))

    def unconditional(self) -> torch.Tensor:
        return self._ready(self.models.encoder).unconditional(1)

    def check_memory(self, work_hw: tuple[int, int], batch: int) -> None:
        """Refuse an edit whose working memory cannot fit (`pbe_core.memory`), before any work."""
        memory.check_fits(self.models, work_hw, batch, self.dtype, self.device)

    def _channels_last(self, *models: torch.nn.Module) -> None:
        if self.device.type == "cpu":  # oneDNN convolves NHWC without reordering each activation
            with torch.inference_mode(False):
                for model in models:
                    model.to(memory_format=torch.channels_last)

    def encode_masked(self, masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE posterior's (mean, std): `sample` takes its mode, or a draw in compat mode."""
        vae = self._ready(self.models.vae)
        self._channels_last(vae.encoder, vae.quant_conv)
        pixels = masked.to(self.device, self.dtype).contiguous(memory_format=torch.channels_last)
        return tuple(moment.contiguous() for moment in vae.encode_moments(pixels))

    def sample(self, job: SampleJob) -> torch.Tensor:
        self._free(self.models.encoder, self.models.vae.encoder, self.models.vae.quant_conv)
        vae, unet = self.models.vae, self._ready(self.models.unet)
        if self.one_shot and self.device.type == "cpu":  # used for this edit only, then freed
            cpu_packing.pack(unet)
        batch, latent_hw = job.cond.shape[0], tuple(s // 8 for s in job.keep.shape[-2:])
        generators = [_seed_generator(seed) for seed in job.seeds]
        noise = self.noise
        if noise is None:
            noise = torch.cat([torch.randn((1, 4, *latent_hw), generator=g) for g in generators])
        elif tuple(noise.shape) != (batch, 4, *latent_hw):
            raise ValueError(f"noise must have shape {(batch, 4, *latent_hw)}; got {tuple(noise.shape)}")
        mean, std = job.masked_latent
        if self.compat == "diffusers":  # diffusers samples the posterior after drawing the noise
            draws = torch.cat([torch.randn(m.shape, generator=g)[None] for m, g in zip(mean, generators, strict=True)])
            mean = mean + std * draws.to(mean)
        masked_latent = mean * vae.config.scaling_factor
        mask_mode = "nearest" if self.compat == "diffusers" else "bilinear"
        latent_keep = prepare.latent_keep_mask(job.keep, latent_hw, mode=mask_mode)
        concat = torch.cat([masked_latent, latent_keep.to(masked_latent)], dim=1)
        eps_model = sampling.guided_eps_model(
            unet, concat, job.cond.to(self.dtype), job.uncond.to(self.dtype), self.guidance
        )
        if self.should_stop is not None:
            inner, should_stop = eps_model, self.should_stop

            def eps_model(x, t):
                if should_stop():
                    raise Interrupted("stopped by the caller")
                return inner(x, t)

        options = {"generator": generators[0], "callback": self.callback}
        if self.sampler == "ddim":
            options["eta"] = self.eta
        latents = sampling.sample(
            self.sampler, eps_model, noise.to(self.device, self.dtype), self.schedule, self.steps, **options
        )
        if not torch.isfinite(latents).all():
            fix = "a lower guidance" + (" or dtype float32" if self.dtype != torch.float32 else "")
            raise ValueError(
                f"sampling produced NaN or infinite latents ({str(self.dtype).removeprefix('torch.')} "
                f"on {self.device.type}), so no image is returned; use {fix}"
            )
        return latents

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self._free(self.models.unet)
        vae = self.models.vae
        self._channels_last(vae.post_quant_conv, vae.decoder)
        latents = (latents / vae.config.scaling_factor).contiguous(memory_format=torch.channels_last)
        return ((vae.decode(latents).float() + 1) / 2).clamp(0, 1).cpu().contiguous()


class PaintByExample:
    """The edit on pbe_core's own models. one_shot: for a process that edits once (the CLI):
    each model is cast and moved when the edit reaches it and freed when the edit is past it, so
    the peak holds one model, not three; a second `run` is refused."""

    def __init__(
        self, models: Models, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
        one_shot: bool = False,
    ):
        self.models = models
        self.device = torch.device(device)
        self.dtype = dtype
        self.one_shot = one_shot
        self.schedule = sampling.scaled_linear_schedule()
        if not one_shot:
            self.to(self.device)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
        lora: str | os.PathLike | None = None, lora_strength: float = 1.0, one_shot: bool = False,
    ) -> PaintByExample:
        """Any layout `pbe_core.checkpoint` reads. Defaults: cuda > mps > cpu; fp16 on GPUs; on
        the CPU bf16 where it is native (AMX, AVX512-BF16), else fp32.
        `lora`: a file from `train --lora`, merged into the weights with `lora_strength`.
        one_shot: the weights stay as the file holds them (memory-mapped) until the edit uses them."""
        device = resolve_device(None if device is None else str(device))
        dtype = dtype or default_dtype(device)
        if device.type == "cpu" and dtype == torch.float16:
            raise ValueError("dtype float16 is not supported on the CPU; use float32 or bfloat16")
        models = load_models(path, dtype=None if one_shot else dtype, device="cpu")
        if lora is not None:
            from .train.lora import apply_lora

            apply_lora(models, lora, lora_strength)
        return cls(models, device=device, dtype=dtype, one_shot=one_shot)

    def to(self, device: str | torch.device) -> PaintByExample:
        self.device = torch.device(device)
        for model in (self.models.unet, self.models.vae, self.models.encoder):
            model.to(device=self.device, dtype=self.dtype)
        return self

    def parts(self, **sampler_options) -> CoreParts:
        """This pipeline's models as the conductor's parts (sampler, steps, guidance, ...)."""
        return CoreParts(self.models, self.device, self.dtype, self.schedule, **sampler_options)

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
        return conductor.encode_exemplars(
            self.parts(), exemplar, mode=mode, exemplar_mask=exemplar_mask, weights=weights
        )

    @torch.inference_mode()
    def region_clip_score(self, images, mask, exemplar, *, exemplar_mask=None, tower=None) -> torch.Tensor:
        """The paper's CLIP score of each result (N,): see `pbe_core.evaluate.region_clip_score`.
        Default tower: this model's own CLIP tower."""
        images = prepare.image_to_tensor(images, "images")
        edit_mask = prepare.fit_mask_to_image(prepare.mask_to_tensor(mask, "mask"), images.shape[-2:])
        return region_clip_score(images, edit_mask, exemplar, tower or self.models.encoder.transformer,
                                 exemplar_mask=exemplar_mask)

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
        candidates: int = 1,
        noise: torch.Tensor | None = None,
        region: Literal["auto", "full"] = "auto",
        context: float = 1.5,
        resolution: int = 512,
        grow: int = 0,
        feather: int = 8,
        context_mask=None,
        fill_holes: bool = False,
        mask_hipass: float = 0.0,
        multiple: int = 8,
        min_size: int = 128,
        max_aspect: float = 2.0,
        colour_match: float = 0.0,
        exemplar_mode: prepare.ExemplarMode | None = None,
        exemplar_mask=None,
        negative_exemplar=None,
        negative_weight: float = 1.0,
        exemplar_weights: Sequence[float] | None = None,
        score_tower=None,
        compat: Compat = None,
        callback: StepCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> EditResult:
        """The edit as tensors, every candidate ranked; `edit` returns PIL images. See `edit`."""
        checked = EditOptions(
            steps=steps, guidance=guidance, sampler=sampler, seed=seed, eta=eta,
            batch_size=batch_size, candidates=candidates, region=region, context=context,
            resolution=resolution, grow=grow, feather=feather, colour_match=colour_match,
            exemplar_mode=exemplar_mode, negative_weight=negative_weight, compat=compat,
        ).validate()
        steps, guidance, seed = checked.steps, checked.guidance, checked.seed
        if next(self.models.unet.parameters()).is_meta:
            raise RuntimeError("this one-shot pipeline freed its models in its first edit; load it again "
                               "(or make it without one_shot to edit many times)")
        if noise is not None and not torch.isfinite(noise).all():
            raise ValueError("noise contains NaN or infinite values; pass finite noise or a seed")
        parts = self.parts(
            sampler=sampler, steps=steps, guidance=guidance, eta=eta, noise=noise, compat=compat,
            callback=callback, should_stop=should_stop, one_shot=self.one_shot and candidates == 1,
        )
        return conductor.conduct_edit(
            parts, image, mask, exemplar, seed=seed, batch_size=batch_size, candidates=candidates,
            region=region, context=context, resolution=resolution, grow=grow, feather=feather,
            context_mask=context_mask, fill_holes=fill_holes, mask_hipass=mask_hipass,
            multiple=multiple, min_size=min_size, max_aspect=max_aspect, colour_match=colour_match,
            exemplar_mode=exemplar_mode or ("crop" if compat == "diffusers" else "squash"),
            exemplar_mask=exemplar_mask, negative_exemplar=negative_exemplar,
            negative_weight=negative_weight, exemplar_weights=exemplar_weights, score_tower=score_tower,
        )

    def edit(self, image, mask, exemplar, **options) -> list[Image.Image]:
        """Place the exemplar's object into the masked region of `image`.

        image, mask, exemplar: PIL images, numpy arrays or tensors (mask: white or 1 = edit).
        steps, guidance, sampler ("plms" | "ddim" | "euler" | "euler_a" | "dpmpp_2m"), eta (DDIM).
        seed: image i of a batch uses seed + i, each drawn as diffusers does (CPU generator,
        `randn` of the latent shape), so a seed reproduces across tools; `noise` overrides it.
        region "auto" crops around the mask (box grown by `context`, longer side `resolution`)
        and stitches back; "full" edits the whole image at its own size padded to a multiple of 8.
        grow, feather: the mask's growth and the feather radius (pixels) used to blend the edit in;
        pixels beyond them are the input's own, bit for bit. context_mask, fill_holes,
        mask_hipass, multiple, min_size, max_aspect: crop options (see `conductor.conduct_edit`).
        colour_match (0..1): move the edited region's colour statistics towards a ring of its
        surroundings (`pbe_core.colour`).
        exemplar_mode "squash" (the reference), "crop" (diffusers) or "pad"; exemplar_mask cuts
        the object out of its background; negative_exemplar replaces (weight 1) or blends with the
        learned unconditional vector; a list of exemplars with exemplar_weights blends them.
        compat "diffusers": nearest latent mask, cropped exemplar, sampled VAE posterior, as
        diffusers' PaintByExamplePipeline. callback(step, total, x0) after each step;
        should_stop() -> True raises Interrupted. An empty mask returns the input with a warning.
        candidates N: seeds seed .. seed + N - 1, and only the best by the paper's region CLIP
        score (`pbe_core.evaluate`) is returned; `run` returns them all ranked, with scores.
        """
        result = self.run(image, mask, exemplar, **options)
        best = result.images[:1] if result.scores is not None else result.images
        return [prepare.to_pil(picture) for picture in best]
