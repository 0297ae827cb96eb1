"""The toy Paint by Example model: the real classes at a tiny size, trained here from nothing.

The paper fine-tunes on top of a pretrained VAE and CLIP tower and freezes both. Neither exists
at this size, so they are pre-trained first on the toy world, standing in for the pretrained
ones: the VAE on reconstruction (+ a small KL and a colour anchor, see `train_vae`), the CLIP tower on telling the object crops'
colour and shape apart (what captions teach CLIP about such pictures). Then both are frozen and
the UNet, mapper, final LN, projection and learned vector are trained by the project's own
recipe (`pbe_core.train`), unchanged but for sizes: 64 px scenes (8x8 latents), a 32 px exemplar
encoder, and a learning rate and warm-up for training from scratch instead of fine-tuning.

    models, path = toy_model()     # trains (minutes) or reuses the cached file (seconds)

Measured with bench/toy_world.py (numbers in the README): on held-out scenes the painted object
takes the exemplar's colour far above chance, growing with guidance, while shuffled exemplars
and the untrained model stay near chance. What it took: 64 px scenes (at 32 px, 4x4 latents,
the VAE could not keep an object's colour) and the VAE's colour anchor (without it, after the
same 1200 steps, held-out VAE round-trip colour 0.31 against 0.71, and after 400 Paint by
Example steps colour agreement 0.12 at guidance 5, chance, against 0.58).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..checkpoint import Models, load_models, save_single_file, weights_of
from ..download import default_model_dir
from ..models.configs import EncoderConfig, UNetConfig, VAEConfig
from ..models.exemplar_encoder import ExemplarEncoder
from ..models.unet import UNet
from ..models.vae import AutoencoderKL
from ..options import cpu_has_native_bf16
from .loop import TrainConfig
from .samples import exemplar_pixels, object_box
from .toy import COLOURS, HELD_OUT, SCENE_SIZE, SHAPES, make_scene
from .trainer import train_steps

RECIPE_VERSION = 3  # bump when anything below changes what is trained

TOY_UNET = UNetConfig(
    model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
    attention_levels=(True, True, False), context_dim=64,
)
# 64 channels at full size, not 32: GroupNorm has 32 groups, and with one channel per group the
# decoder's last norm erases each channel's mean, so flat areas lose their colour.
TOY_VAE = VAEConfig(base_channels=64, channel_mult=(1, 1, 2, 2), num_res_blocks=1)
TOY_ENCODER = EncoderConfig(
    hidden_size=64, intermediate_size=256, num_layers=3, num_heads=1,
    image_size=32, patch_size=8, mapper_depth=1, context_dim=64,
)

Report = Callable[[str], None]


@dataclass(frozen=True)
class ToyRecipe:
    """Everything that decides the toy model; its hash keys the cache."""

    size: int = SCENE_SIZE
    scenes: int = 4000  # distinct training scenes
    seed: int = 0
    vae_steps: int = 1200
    vae_batch: int = 8
    vae_crop: int = 32  # training windows, a quarter of a 64 px scene
    vae_lr: float = 1e-3
    vae_kl: float = 1e-5
    clip_steps: int = 600
    clip_batch: int = 64
    clip_lr: float = 2e-3
    clip_crops: int = 2000
    unet: UNetConfig = TOY_UNET
    vae: VAEConfig = TOY_VAE
    encoder: EncoderConfig = TOY_ENCODER
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1000, resolution=SCENE_SIZE, batch_size=16, lr=1e-3, warmup_steps=50, warmup_start=0.01,
        # bf16 autocast (VAE too) where the CPU has it natively; emulated it is 10x slower
        precision="bf16" if cpu_has_native_bf16() else "fp32",
    ))

    def key(self) -> str:
        text = json.dumps({"version": RECIPE_VERSION, **asdict(self)}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


class ToyScenes:
    """(picture, object mask) pairs of the toy world: item i is scene `first + i`, its first
    object the one to learn (any second object is a distractor). Deterministic, drawn on demand."""

    def __init__(self, count: int, first: int = 0, size: int = SCENE_SIZE):
        self.count, self.first, self.size = count, first, size

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[Image.Image, Image.Image]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        scene = make_scene(self.first + index, self.size)
        mask = (scene.objects[0].mask * 255).round().astype(np.uint8)
        return Image.fromarray(scene.image), Image.fromarray(mask, mode="L")


def cache_path(recipe: ToyRecipe = ToyRecipe()) -> Path:
    """Where the toy model for `recipe` lives: `$PBE_MODEL_DIR` or ~/.cache/paint-by-example."""
    return default_model_dir() / "toy" / f"toy-{recipe.key()}.safetensors"


# ---------------------------------------------------------------------------------------------
# The frozen parts' stand-ins


def _grey_out(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A third of the pictures get a grey (0) box, as masked images have, so the VAE knows them."""
    out = pixels.clone()
    size = pixels.shape[-1]
    for index in range(pixels.shape[0]):
        if torch.rand((), generator=generator) < 1 / 3:
            x0, y0 = torch.randint(0, size // 2, (2,), generator=generator).tolist()
            w, h = torch.randint(size // 6, size // 2, (2,), generator=generator).tolist()
            out[index, :, y0 : y0 + h, x0 : x0 + w] = 0
    return out


def _pictures(scenes: ToyScenes, indices: list[int]) -> torch.Tensor:
    return torch.stack([
        torch.from_numpy(np.asarray(scenes[i][0], dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
        for i in indices
    ])


def _crops(pictures: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A random size x size window of each picture (the VAE is convolutional: crops train it
    for whole pictures at a quarter of the cost)."""
    limit = pictures.shape[-1] - size + 1
    corners = torch.randint(0, limit, (pictures.shape[0], 2), generator=generator).tolist()
    return torch.stack([p[:, y : y + size, x : x + size] for p, (y, x) in zip(pictures, corners, strict=True)])


def train_vae(recipe: ToyRecipe, report: Report) -> AutoencoderKL:
    """Reconstruction (L1 + MSE, plus MSE of 8x8-pixel means, which carries flat colours), a
    small KL, and an anchor: the posterior mean's first three channels follow the 8x8-pixel mean
    colour. SD's VAE latents are roughly linear in colour (what latent previews rely on); without
    the anchor this one coded hue on a single axis shared by all four channels, so colours lay
    too close for the UNet to hit (held-out colour agreement at chance). Trained on random crops;
    then the latent is rescaled so that latents times the SD scaling factor have unit spread, as
    the noise schedule expects."""
    torch.manual_seed(recipe.seed)
    vae = AutoencoderKL(recipe.vae)
    with torch.no_grad():  # start nearly deterministic: posterior noise of std 1 drowns the signal
        vae.quant_conv.bias[recipe.vae.embed_dim :] = -8.0
    optimizer = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, recipe.vae_lr, total_steps=recipe.vae_steps, pct_start=0.05
    )
    generator = torch.Generator().manual_seed(recipe.seed)
    scenes = ToyScenes(recipe.scenes, size=recipe.size)
    started = time.perf_counter()
    for step in range(recipe.vae_steps):
        indices = torch.randint(0, len(scenes), (recipe.vae_batch,), generator=generator).tolist()
        batch = _crops(_grey_out(_pictures(scenes, indices), generator), recipe.vae_crop, generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.train.precision == "bf16"):
            mean, std = vae.encode_moments(batch)
            latent = mean + std * torch.randn(mean.shape, generator=generator)
            decoded = vae.decode(latent).float()
        mean, std = mean.float(), std.float()
        kl = 0.5 * (mean**2 + std**2 - 1 - 2 * std.log()).mean()
        colours = F.mse_loss(F.avg_pool2d(decoded, 8), F.avg_pool2d(batch, 8))
        anchor = F.mse_loss(mean[:, :3], F.avg_pool2d(batch, 8))
        loss = (decoded - batch).abs().mean() + F.mse_loss(decoded, batch) + colours + recipe.vae_kl * kl + anchor
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % 200 == 0 or step + 1 == recipe.vae_steps:
            report(f"  vae {step + 1}/{recipe.vae_steps}: loss {loss.item():.4f} ({time.perf_counter() - started:.0f}s)")
    vae.eval().requires_grad_(False)
    _rescale_latents(vae, _pictures(scenes, torch.randint(0, len(scenes), (32,), generator=generator).tolist()))
    return vae


@torch.no_grad()
def _rescale_latents(vae: AutoencoderKL, pictures: torch.Tensor) -> None:
    """Scale the latent space (quant_conv's mean out, post_quant_conv's input in) so that the
    posterior means have standard deviation 1 / scaling_factor. The decoder is unchanged."""
    mean, _ = vae.encode_moments(pictures)
    factor = 1 / (vae.config.scaling_factor * mean.std().item())
    channels = vae.config.embed_dim
    vae.quant_conv.weight[:channels] *= factor
    vae.quant_conv.bias[:channels] *= factor
    vae.quant_conv.bias[channels:] += 2 * float(np.log(factor))  # the std scales by factor too
    vae.post_quant_conv.weight /= factor


class _Heads(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.colour = nn.Linear(width, len(COLOURS))
        self.shape = nn.Linear(width, len(SHAPES))


def _exemplar_set(recipe: ToyRecipe, scenes: range, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Recipe-augmented object crops (as the training samples' exemplars) and their labels."""
    rng = np.random.default_rng(seed)
    pixels, colours, shapes = [], [], []
    for index in scenes:
        scene = make_scene(index, recipe.size)
        obj = scene.objects[int(rng.integers(len(scene.objects)))]
        picture = Image.fromarray(scene.image)
        box = object_box(Image.fromarray((obj.mask * 255).round().astype(np.uint8), mode="L"), picture.size)
        pixels.append(exemplar_pixels(picture, box, recipe.encoder.image_size, recipe.train.recipe, rng))
        colours.append(obj.colour)
        shapes.append(obj.shape)
    return torch.stack(pixels), torch.tensor(colours), torch.tensor(shapes)


def train_clip_tower(encoder: ExemplarEncoder, recipe: ToyRecipe, report: Report) -> float:
    """Pre-train the encoder's CLIP tower to tell colour and shape from its pooled class token
    (two linear heads, thrown away afterwards), then freeze it. Returns held-out accuracy."""
    torch.manual_seed(recipe.seed + 1)
    tower = encoder.transformer
    heads = _Heads(recipe.encoder.hidden_size)
    pixels, colours, shapes = _exemplar_set(recipe, range(recipe.clip_crops), recipe.seed)
    test_pixels, test_colours, test_shapes = _exemplar_set(recipe, range(HELD_OUT, HELD_OUT + 200), recipe.seed + 1)
    parameters = [*tower.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=recipe.clip_lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.clip_lr, total_steps=recipe.clip_steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(recipe.seed + 2)
    tower.train()
    for _ in range(recipe.clip_steps):
        pick = torch.randint(0, len(pixels), (recipe.clip_batch,), generator=generator)
        pooled = tower(pixel_values=pixels[pick]).pooler_output
        loss = F.cross_entropy(heads.colour(pooled), colours[pick]) + F.cross_entropy(heads.shape(pooled), shapes[pick])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    tower.eval().requires_grad_(False)
    with torch.no_grad():
        pooled = tower(pixel_values=test_pixels).pooler_output
        colour_accuracy = (heads.colour(pooled).argmax(1) == test_colours).float().mean().item()
        shape_accuracy = (heads.shape(pooled).argmax(1) == test_shapes).float().mean().item()
    report(f"  clip tower: held-out colour accuracy {colour_accuracy:.2f}, shape {shape_accuracy:.2f}")
    return colour_accuracy


# ---------------------------------------------------------------------------------------------
# The whole model


def untrained_models(recipe: ToyRecipe = ToyRecipe(), seed: int = 0) -> Models:
    """The toy architecture with its initial (random) weights: the control."""
    torch.manual_seed(seed)
    models = Models(UNet(recipe.unet), AutoencoderKL(recipe.vae), ExemplarEncoder(recipe.encoder), "original")
    for model in (models.unet, models.vae, models.encoder):
        model.eval().requires_grad_(False)
    return models


def train_toy(recipe: ToyRecipe = ToyRecipe(), report: Report = print) -> Models:
    """Pre-train the VAE and the CLIP tower, freeze them, then train Paint by Example."""
    started = time.perf_counter()
    report(f"toy model: pre-training the VAE ({recipe.vae_steps} steps)")
    vae = train_vae(recipe, report)
    models = untrained_models(recipe, recipe.seed)
    models.vae = vae
    report(f"toy model: pre-training the CLIP tower ({recipe.clip_steps} steps)")
    train_clip_tower(models.encoder, recipe, report)
    report(f"toy model: training Paint by Example ({recipe.train.steps} steps, batch {recipe.train.batch_size})")
    scenes = ToyScenes(recipe.scenes, size=recipe.size)
    every = max(recipe.train.steps // 6, 1)

    def progress(p) -> None:
        if p.step % every == 0 or p.step == p.steps:
            report(f"  step {p.step}/{p.steps}: loss {p.loss:.4f}, {p.steps_per_s:.2f} steps/s")

    train_steps(models, scenes, recipe.train, callback=progress)
    report(f"toy model: trained in {time.perf_counter() - started:.0f}s")
    return models


def toy_model(recipe: ToyRecipe = ToyRecipe(), report: Report = print, path: Path | None = None) -> tuple[Models, Path]:
    """The cached toy model for `recipe`, trained first if it is not there (written atomically)."""
    path = path or cache_path(recipe)
    if not path.is_file():
        save_single_file(weights_of(train_toy(recipe, report)), path)
        report(f"toy model: saved {path}")
    return load_models(path), path
