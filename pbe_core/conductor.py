"""THE edit, conducted once for every host; the sampler and the VAE are parts the host provides.

    result = conduct_edit(parts, image, mask, exemplar, seed=0, region="auto", ...)

The sequence: check the options (`options.EditOptions`), read the inputs (the edit mask decided
pixel by pixel once, `prepare.binary_edit_mask`), encode the exemplar(s), pair them with the images, plan the
region, crop, make the keep-mask and the masked image, encode it (VAE part), sample (sampler
part), decode (VAE part), stitch, colour match, and with `candidates` rank them by the region
CLIP score. `pbe_core.pipeline.CoreParts` are pbe_core's own sampling and VAE; ComfyUI's node
brings KSampler and ComfyUI's VAE (see /work/helpers/CONDUCTOR_API.md). Whatever is tied to a
sampler (steps, guidance, scheduler, noise, progress, interruption) lives in the parts.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from . import colour, conditioning, prepare, regions
from .evaluate import ImageTower, region_clip_score
from .options import EditOptions


@dataclass
class SampleJob:
    """What the sampler part gets: everything the 9-channel UNet's inputs are made of."""

    masked_latent: Any  # what `encode_masked` returned for the masked image (opaque here)
    keep: torch.Tensor  # (B, 1, h, w) binary keep-mask (1 = keep) at working size, pixels
    cond: torch.Tensor  # (B, 1, ctx) exemplar context, one per image
    uncond: torch.Tensor  # (1 or B, 1, ctx) the unconditional context (learned or negative)
    seeds: list[int]  # image i of the batch: seed + i


class EditParts(Protocol):
    """The host's half of the edit. Tensors come in float32 on the CPU unless said otherwise."""

    exemplar_size: int  # the exemplar encoder's square input side

    def encode_exemplars(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) CLIP-normalised exemplars -> (N, 1, ctx) context."""

    def unconditional(self) -> torch.Tensor:
        """The learned unconditional vector (1, 1, ctx)."""

    # Optional: check_memory(work_hw, batch) raises before any work when the edit cannot fit.

    def encode_masked(self, masked: torch.Tensor) -> Any:
        """(B, 3, h, w) masked image in [-1, 1] (edit region 0) -> its latent, as `sample` takes it."""

    def sample(self, job: SampleJob) -> torch.Tensor:
        """Sample from noise (drawn by the parts from job.seeds) with guidance -> latents."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents from `sample` -> (B, 3, h, w) in [0, 1] (any device, any float dtype)."""

    @property
    def clip_tower(self) -> ImageTower:
        """The CLIP vision tower of the exemplar encoder, for ranking candidates."""


@dataclass
class EditResult:
    images: torch.Tensor  # (B, 3, H, W) in [0, 1]: the input with the region stitched back
    decoded: torch.Tensor  # (B, 3, h, w) in [0, 1]: the model's output at working size
    latents: torch.Tensor  # the sampled latents, as the sampler part gave them
    region: regions.Region
    # with candidates: every tensor above holds all candidates, best first
    scores: torch.Tensor | None = None  # (B,) region CLIP score of each, descending
    seeds: list[int] | None = None  # the seed each candidate was drawn with, in that order


def _per_exemplar(exemplar, exemplar_mask) -> tuple[list, list]:
    """One picture or a list, with one mask for all (or None) or a list of one per picture."""
    exemplars = list(exemplar) if isinstance(exemplar, (list, tuple)) else [exemplar]
    if isinstance(exemplar_mask, (list, tuple)):
        masks = list(exemplar_mask)
    else:
        masks = [exemplar_mask] * len(exemplars)
    if len(masks) != len(exemplars):
        raise ValueError(f"exemplar_mask has {len(masks)} entries for {len(exemplars)} exemplars")
    return exemplars, masks


def _encode(parts: EditParts, exemplar, mode, exemplar_mask=None) -> torch.Tensor:
    """Each exemplar prepared alone (a list may hold pictures of different sizes), encoded at once."""
    exemplars, masks = _per_exemplar(exemplar, exemplar_mask)
    pixels = torch.cat([
        prepare.prepare_exemplar(picture, size=parts.exemplar_size, mode=mode, exemplar_mask=picture_mask)
        for picture, picture_mask in zip(exemplars, masks, strict=True)
    ])
    return parts.encode_exemplars(pixels)


def encode_exemplars(
    parts: EditParts, exemplar, *, mode: prepare.ExemplarMode = "squash", exemplar_mask=None,
    weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Exemplar picture(s) -> context (N, 1, ctx); with `weights`, one blended (1, 1, ctx)."""
    embeddings = _encode(parts, exemplar, mode, exemplar_mask)
    return embeddings if weights is None else conditioning.blend_embeddings(embeddings, weights)


def unconditional(parts: EditParts, negative_exemplar=None, negative_weight: float = 1.0, mode="squash"):
    """The learned vector (1, 1, ctx), or its blend with a negative exemplar's context."""
    negative = None if negative_exemplar is None else _encode(parts, negative_exemplar, mode)[:1]
    return conditioning.unconditional_context(parts.unconditional(), negative, negative_weight)


def rank_candidates(result: EditResult, edit_mask, exemplar, tower: ImageTower, *, exemplar_mask=None,
                    exemplar_weights: Sequence[float] | None = None) -> EditResult:
    """Order a result's images by region CLIP score against the exemplar(s), best first.

    Several exemplars (blended): the score is their weighted mean, with the blend's weights.
    """
    exemplars, masks = _per_exemplar(exemplar, exemplar_mask)
    weights = list(exemplar_weights) if exemplar_weights is not None else [1.0] * len(exemplars)
    if len(weights) != len(exemplars):
        raise ValueError(f"candidates: {len(weights)} exemplar_weights for {len(exemplars)} exemplars")
    scores = sum(
        weight * region_clip_score(result.images, edit_mask, picture, tower, exemplar_mask=picture_mask)
        for picture, picture_mask, weight in zip(exemplars, masks, weights, strict=True)
    ) / sum(weights)
    order = torch.argsort(scores, descending=True, stable=True)
    seeds = result.seeds or list(range(len(order)))
    return EditResult(
        result.images[order], result.decoded[order], result.latents[order], result.region,
        scores[order], [seeds[i] for i in order.tolist()],
    )


def _check_grow(edit_mask: torch.Tensor, grow: int) -> None:
    """A negative grow that erodes a mask away would throw the whole edit away: refuse it."""
    box = regions.mask_bbox(edit_mask)
    if grow >= 0 or box is None:
        return
    x0, y0, x1, y1 = box  # one pixel of the (empty) surroundings keeps the erosion exact
    window = edit_mask[..., max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1]
    left = regions.grow_mask(window, grow).amax(dim=(1, 2, 3))
    if bool(((left == 0) & (window.amax(dim=(1, 2, 3)) > 0)).any()):
        raise ValueError(
            f"grow {grow} shrinks the mask to nothing (it is {x1 - x0}x{y1 - y0} px at most), so "
            "the edit would be thrown away; use a smaller shrink or grow >= 0"
        )


@torch.inference_mode()
def conduct_edit(
    parts: EditParts,
    image,
    mask,
    exemplar,
    *,
    seed: int = 0,
    batch_size: int = 1,
    candidates: int = 1,
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
    exemplar_mode: prepare.ExemplarMode = "squash",
    exemplar_mask=None,
    negative_exemplar=None,
    negative_weight: float = 1.0,
    exemplar_weights: Sequence[float] | None = None,
    score_tower: ImageTower | None = None,
) -> EditResult:
    """The edit as tensors, on the host's parts. See `PaintByExample.edit` for the options.

    Crop options (`pbe_core.regions`): mask_hipass drops mask values below it, fill_holes fills
    what the mask encloses, context_mask widens the crop to take in its box; multiple, min_size
    and max_aspect shape the crop as `regions.plan_region` says.

    candidates N > 1 draws seeds seed .. seed + N - 1 for one input and returns them all ranked
    by region CLIP score (on `score_tower`, by default the parts' own CLIP tower), best first.
    """
    checked = EditOptions(
        seed=seed, batch_size=batch_size, candidates=candidates, region=region, context=context,
        resolution=resolution, grow=grow, feather=feather, fill_holes=fill_holes,
        mask_hipass=mask_hipass, multiple=multiple, min_size=min_size, max_aspect=max_aspect,
        colour_match=colour_match, exemplar_mode=exemplar_mode, negative_weight=negative_weight,
    ).validate()  # the sampler's options are the parts'; theirs stay at valid defaults here
    seed, batch_size, candidates, resolution, grow, feather, multiple, min_size = (
        checked.seed, checked.batch_size, checked.candidates, checked.resolution, checked.grow,
        checked.feather, checked.multiple, checked.min_size,
    )

    pixels = prepare.image_to_tensor(image, "image")
    edit_mask = prepare.fit_mask_to_image(prepare.mask_to_tensor(mask, "mask"), pixels.shape[-2:])
    edit_mask = regions.hipass_mask(edit_mask, mask_hipass)
    if fill_holes:
        edit_mask = regions.fill_holes(edit_mask)
    edit_mask = prepare.binary_edit_mask(edit_mask)  # faint noise never reaches kept pixels
    _check_grow(edit_mask, grow)
    if context_mask is not None:
        context_mask = prepare.mask_to_tensor(context_mask, "context_mask")
        context_mask = prepare.fit_mask_to_image(context_mask, pixels.shape[-2:], "context_mask")
        context_mask = regions.hipass_mask(context_mask, mask_hipass)
    cond = encode_exemplars(parts, exemplar, mode=exemplar_mode, exemplar_mask=exemplar_mask,
                            weights=exemplar_weights)
    pixels, edit_mask, cond = prepare.broadcast_batch(
        pixels, edit_mask, cond, names=("image", "mask", "exemplar")
    )
    repeat = max(batch_size, candidates)
    if repeat > 1:
        if pixels.shape[0] != 1:
            what = "batch_size" if batch_size > 1 else "candidates"
            raise ValueError(f"{what} {repeat} repeats one input; got {pixels.shape[0]} inputs")
        pixels, edit_mask, cond = (t.expand(repeat, *t.shape[1:]) for t in (pixels, edit_mask, cond))
    batch = pixels.shape[0]
    seeds = [seed + index for index in range(batch)]

    if torch.all(prepare.edit_to_keep_mask(edit_mask) == 1):
        warnings.warn("the mask is empty: nothing to edit, returning the input unchanged", stacklevel=3)
        whole = regions.plan_full(pixels.shape[-2:])
        return EditResult(pixels.clone(), pixels.clone(), torch.empty(0), whole)

    plan = (
        regions.plan_region(
            pixels.shape[-2:], edit_mask, context, resolution, multiple, min_size,
            margin=max(grow, 0) + feather, max_aspect=max_aspect, context_mask=context_mask,
        )
        if region == "auto"
        else regions.plan_full(pixels.shape[-2:], multiple)
    )
    if hasattr(parts, "check_memory"):  # optional: parts that can tell refuse what cannot fit
        parts.check_memory((plan.height, plan.width), batch)
    crop_pixels, crop_mask = regions.crop(pixels, edit_mask, plan)
    keep = prepare.edit_to_keep_mask(crop_mask)
    masked_latent = parts.encode_masked(prepare.masked_image(prepare.to_model_range(crop_pixels), keep))
    uncond = unconditional(parts, negative_exemplar, negative_weight, exemplar_mode)
    latents = parts.sample(SampleJob(masked_latent, keep, cond, uncond, seeds))
    decoded = parts.decode(latents).float().clamp(0, 1).cpu()
    images = regions.stitch(pixels, decoded, edit_mask, plan, grow=grow, feather=feather)
    if colour_match > 0:
        images = colour.colour_match(images, edit_mask, colour_match, grow=grow, feather=feather)
    result = EditResult(images, decoded, latents.float().cpu(), plan, seeds=seeds)
    if candidates > 1:
        result = rank_candidates(result, edit_mask, exemplar, score_tower or parts.clip_tower,
                                 exemplar_mask=exemplar_mask, exemplar_weights=exemplar_weights)
    return result
