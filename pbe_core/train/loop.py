"""The training step's parts: config, the run's samples, trained and frozen parts, gradient
checkpointing, and the loss (epsilon MSE at uniform timesteps, 20% unconditional dropout).

Reproducible without hidden state: sample i of the run is drawn by a NumPy generator seeded
with (seed, i), step s's timesteps, noise, posterior draws and dropout by a torch generator
seeded with (seed, s, micro-batch), and the data order of epoch e by (seed, e). A saved state
(weights, optimizer, scaler, step) therefore resumes to exactly the run that was interrupted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..checkpoint import Models
from .lora import TARGETS
from .samples import Recipe, Sample, build_sample

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ENCODER_PARTS = ("mapper", "final_ln", "proj_out", "learnable_vector")
TRAINABLE = ("unet", *ENCODER_PARTS)


@dataclass
class TrainConfig:
    """What and how to train; defaults are the paper's (configs/v1.yaml) where it has one.

    lr warms up linearly from `warmup_start` x lr to lr over `warmup_steps` optimizer steps.
    `train` names the parts trained fully; with `lora_rank` > 0 the UNet instead gets LoRA
    adapters of that rank on `lora_targets` (see `pbe_core.train.lora`) and stays frozen.
    """

    steps: int = 1000  # optimizer steps
    resolution: int = 512
    batch_size: int = 4
    grad_accum: int = 1  # micro-batches of `batch_size` per optimizer step
    lr: float = 1e-5
    warmup_steps: int = 10_000
    warmup_start: float = 1e-6
    weight_decay: float = 0.01  # torch's AdamW default, which the reference uses
    seed: int = 0
    precision: str = "fp32"  # autocast dtype: "fp32" (off), "bf16" or "fp16" (with loss scaling)
    uncond_p: float = 0.2  # `u_cond_percent`, drawn per sample
    train: tuple[str, ...] = TRAINABLE
    lora_rank: int = 0
    lora_alpha: float | None = None  # default: the rank (scale 1)
    lora_targets: tuple[str, ...] = ("attention",)
    checkpointing: bool = False  # gradient checkpointing of the UNet's blocks
    device: str = "cpu"
    recipe: Recipe = field(default_factory=Recipe)

    def __post_init__(self) -> None:
        unknown = set(self.train) - set(TRAINABLE)
        if unknown:
            raise ValueError(f"train: unknown parts {sorted(unknown)}; valid: {', '.join(TRAINABLE)}")
        unknown = set(self.lora_targets) - set(TARGETS)
        if unknown:
            raise ValueError(f"LoRA targets: unknown {sorted(unknown)}; valid: {', '.join(TARGETS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        for name in ("steps", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}")
        if self.resolution < 8 or self.resolution % 8:
            raise ValueError(f"resolution must be a multiple of 8; got {self.resolution}")
        if not 0 <= self.uncond_p <= 1:
            raise ValueError(f"uncond_p must lie in 0..1; got {self.uncond_p}")
        if self.lora_rank < 0 or self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError("need lora_rank >= 0, lr > 0 and warmup_steps >= 0")


@dataclass
class Progress:
    step: int  # optimizer steps done
    steps: int
    loss: float  # mean loss of this step's micro-batches
    lr: float
    steps_per_s: float
    eta_s: float
    skipped: int  # samples skipped so far because they could not be built


def warmup_factor(step: int, config: TrainConfig) -> float:
    """The lr multiplier at optimizer step `step` (ldm's LambdaLinearScheduler)."""
    if step >= config.warmup_steps:
        return 1.0
    return config.warmup_start + (1 - config.warmup_start) * step / config.warmup_steps


def _seed(*values: int) -> int:
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0])


# ---------------------------------------------------------------------------------------------
# Data


class SampleStream:
    """Samples of a run from `source`, a sequence of (picture, object mask or box) pairs.

    Global sample i comes from source[order_e[i % n]] with order_e a permutation for epoch
    e = i // n, and is built with a generator seeded by (seed, i). An item that fails to build
    (unreadable picture, empty object) is counted and replaced by the next one, never raised.
    """

    def __init__(self, source: Sequence, config: TrainConfig, exemplar_size: int):
        if len(source) == 0:
            raise ValueError("the sample source is empty")
        self.source, self.config, self.exemplar_size = source, config, exemplar_size
        self.skipped: list[str] = []
        self._orders: dict[int, np.ndarray] = {}

    def _item(self, index: int):
        epoch, position = divmod(index, len(self.source))
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng(_seed(self.config.seed, epoch)).permutation(len(self.source))}
        return self.source[int(self._orders[epoch][position])]

    def sample(self, index: int) -> Sample:
        for attempt in range(len(self.source)):
            rng = np.random.default_rng(_seed(self.config.seed, index, attempt))
            try:
                picture, region = self._item(index + attempt)
                return build_sample(
                    picture, region, rng, resolution=self.config.resolution,
                    exemplar_size=self.exemplar_size, recipe=self.config.recipe,
                )
            except (OSError, ValueError) as error:
                self.skipped.append(f"sample {index + attempt}: {error}")
        raise ValueError(f"no item of the sample source could be built: {self.skipped[:3]}")

    def batch(self, first: int, size: int) -> dict[str, torch.Tensor]:
        samples = [self.sample(first + offset) for offset in range(size)]
        names = ("image", "masked", "latent_keep", "exemplar")
        return {name: torch.stack([getattr(s, name) for s in samples]) for name in names}


# ---------------------------------------------------------------------------------------------
# Parts


def trainable_parameters(models: Models, config: TrainConfig, adapters: nn.Module | None = None) -> dict[str, nn.Parameter]:
    """Freeze everything, then mark the configured parts trainable; name -> parameter, in a
    fixed order (the optimizer's and the training state's)."""
    encoder = models.encoder
    for model in (models.unet, models.vae, encoder):
        model.requires_grad_(False).eval()
    chosen: dict[str, nn.Parameter] = {}
    parts = {
        "unet": models.unet,
        "mapper": encoder.mapper,
        "final_ln": encoder.final_ln,
        "proj_out": encoder.proj_out,
    }
    for part in config.train:
        if part == "learnable_vector":
            chosen["encoder.learnable_vector"] = encoder.learnable_vector
        elif part == "unet" and adapters is not None:
            chosen.update({f"lora.{n}": p for n, p in adapters.named_parameters()})
        else:
            prefix = "unet." if part == "unet" else f"encoder.{part}."
            chosen.update({prefix + n: p for n, p in parts[part].named_parameters()})
    for name, parameter in chosen.items():
        if parameter.dtype != torch.float32:
            raise ValueError(
                f"{name} is {parameter.dtype}: train on float32 weights (load the models in "
                "float32) and pick precision 'bf16' or 'fp16' for mixed precision"
            )
        parameter.requires_grad_(True)
    models.unet.train(any(n.startswith(("unet.", "lora.")) for n in chosen))
    return chosen


def _checkpointed(block: nn.Module):
    plain = block.forward

    def forward(*args):
        if not torch.is_grad_enabled():
            return plain(*args)
        return checkpoint(plain, *args, use_reentrant=False)

    return forward


@contextlib.contextmanager
def gradient_checkpointing(unet: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Recompute each UNet block's activations in the backward pass instead of storing them."""
    blocks = [*unet.input_blocks, unet.middle_block, *unet.output_blocks] if enabled else []
    for block in blocks:
        block.forward = _checkpointed(block)
    try:
        yield
    finally:
        for block in blocks:
            del block.forward


# ---------------------------------------------------------------------------------------------
# The loss


def _latents(vae: nn.Module, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    mean, std = vae.encode_moments(pixels)
    draw = torch.randn(mean.shape, generator=generator).to(mean)
    return (mean + std * draw) * vae.config.scaling_factor


def drop_context(
    context: torch.Tensor, unconditional: torch.Tensor, p: float, generator: torch.Generator
) -> torch.Tensor:
    """Each sample's context replaced by the unconditional one with probability `p`."""
    drop = (torch.rand(context.shape[0], generator=generator) < p).to(context.device)
    return torch.where(drop[:, None, None], unconditional.to(context), context)


def diffusion_loss(
    models: Models, batch: dict[str, torch.Tensor], generator: torch.Generator,
    alphas_cumprod: torch.Tensor, uncond_p: float,
) -> torch.Tensor:
    """MSE between the UNet's predicted and the true noise at uniform timesteps; with
    probability `uncond_p` per sample the learned unconditional vector replaces the context.
    The frozen VAE and CLIP tower run without gradients (the posterior is sampled, as ldm)."""
    vae, encoder, unet = models.vae, models.encoder, models.unet
    size = batch["image"].shape[0]
    with torch.no_grad():
        latents = _latents(vae, batch["image"], generator)
        masked_latents = _latents(vae, batch["masked"], generator)
        pooled = encoder.transformer(pixel_values=batch["exemplar"]).pooler_output
    context = drop_context(encoder.project(pooled), encoder.unconditional(size), uncond_p, generator)
    timesteps = torch.randint(0, alphas_cumprod.shape[0], (size,), generator=generator)
    noise = torch.randn(latents.shape, generator=generator).to(latents)
    alpha = alphas_cumprod[timesteps.to(alphas_cumprod.device)].to(latents)[:, None, None, None]
    noisy = alpha.sqrt() * latents + (1 - alpha).sqrt() * noise
    keep = batch["latent_keep"].to(latents)
    eps = unet(torch.cat([noisy, masked_latents, keep], dim=1), timesteps.to(latents.device), context)
    return F.mse_loss(eps.float(), noise.float())
