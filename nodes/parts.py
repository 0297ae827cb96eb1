"""ComfyUI's machinery as the parts of pbe_core's one edit (`pbe_core.conductor.conduct_edit`):
its KSampler (every sampler and scheduler, model patches, progress, previews, cancel) and its
VAE. The conductor plans, crops, builds the keep-mask and stitches; these only run models."""

from __future__ import annotations

import comfy.model_management
import nodes as comfy_nodes  # ComfyUI's own nodes.py: common_ksampler brings progress, previews
import torch

from ..pbe_core.conductor import SampleJob
from .conditioning import attach_inpaint_inputs, encode_masked
from .exemplar import conditioning, learned_negative
from .model import encoder_of


class ComfyEditParts:
    def __init__(
        self, model, vae, encoder, steps: int, cfg: float, sampler_name: str, scheduler: str
    ):
        self.model, self.vae, self.encoder = model, vae, encoder
        self.steps, self.cfg = steps, cfg
        self.sampler_name, self.scheduler = sampler_name, scheduler
        self.exemplar_size = encoder_of(encoder).config.image_size

    @property
    def clip_tower(self) -> torch.nn.Module:
        return encoder_of(self.encoder).transformer

    def encode_exemplars(self, pixels: torch.Tensor) -> torch.Tensor:
        embeddings = encoder_of(self.encoder)(pixels.to(self.encoder.load_device))
        return embeddings.to(comfy.model_management.intermediate_device(), torch.float32)

    def unconditional(self) -> torch.Tensor:
        return learned_negative(self.encoder)

    def encode_masked(self, masked: torch.Tensor) -> torch.Tensor:
        return encode_masked(self.vae, masked)

    def sample(self, job: SampleJob) -> torch.Tensor:
        # PaintByExampleModel makes the latent keep-mask from this edit mask itself (binary here,
        # resized bilinearly); the batch's noise comes from one seed, as in ComfyUI's KSampler.
        positive, negative, latent = attach_inpaint_inputs(
            conditioning(job.cond), conditioning(job.uncond), job.masked_latent, 1 - job.keep
        )
        comfy.model_management.throw_exception_if_processing_interrupted()
        (samples,) = comfy_nodes.common_ksampler(
            self.model,
            job.seeds[0],
            self.steps,
            self.cfg,
            self.sampler_name,
            self.scheduler,
            positive,
            negative,
            latent,
        )
        return samples["samples"]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents).movedim(-1, 1)
