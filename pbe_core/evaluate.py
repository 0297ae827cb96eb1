"""Quality measures of edits, pure functions of pictures and a CLIP image tower.

`region_clip_score` is the paper's CLIP score: 100 x the cosine similarity between the CLIP image
features of the exemplar and of the edited region (the box of the mask, cut from the result).
The tower is any CLIP vision model: by default the model's own (`encoder.transformer`, the
tower Paint by Example conditions on), or another one passed in (e.g. the paper's ViT-B/32).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from . import prepare
from .regions import mask_bbox

ImageTower = nn.Module | Callable[[torch.Tensor], torch.Tensor]


def _tower_size(tower: ImageTower) -> int:
    config = getattr(tower, "config", None)
    size = getattr(config, "image_size", None)
    if not isinstance(size, int):
        raise ValueError(
            "tower: cannot tell its input size (no config.image_size); pass size= explicitly"
        )
    return size


def _unwrap(tower: ImageTower) -> ImageTower:
    """An ExemplarEncoder stands for its CLIP tower (the encoder's output is the mapper's)."""
    from .models.exemplar_encoder import ExemplarEncoder

    return tower.transformer if isinstance(tower, ExemplarEncoder) else tower


@torch.inference_mode()
def image_features(tower: ImageTower, pixel_values: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """CLIP-normalised pixels (B, 3, S, S) -> pooled image features (B, D), float32.

    A Hugging Face CLIP tower gives its `image_embeds` when it has a projection
    (CLIPVisionModelWithProjection), else its `pooler_output` (the post-LayerNorm class token);
    any other callable must return (B, D) itself. Runs in chunks of `chunk` pictures.
    """
    tower = _unwrap(tower)
    parameter = next(iter(tower.parameters()), None) if isinstance(tower, nn.Module) else None
    features = []
    for start in range(0, pixel_values.shape[0], chunk):
        batch = pixel_values[start : start + chunk]
        if parameter is not None:
            batch = batch.to(parameter.device, parameter.dtype)
        if isinstance(tower, nn.Module) and hasattr(tower, "config"):
            output = tower(pixel_values=batch)
            pooled = getattr(output, "image_embeds", None)
            pooled = output.pooler_output if pooled is None else pooled
        else:
            pooled = tower(batch)
        if pooled.ndim != 2 or pooled.shape[0] != batch.shape[0]:
            raise ValueError(f"tower: expected features of shape (B, D); got {tuple(pooled.shape)}")
        features.append(pooled.float().cpu())
    return torch.cat(features)


def region_crops(images: torch.Tensor, edit_mask: torch.Tensor) -> list[torch.Tensor]:
    """Each image's edited region: the box of its mask (> 0.5, the pixels the model repainted)."""
    images, edit_mask = prepare.broadcast_batch(images, edit_mask, names=("images", "edit_mask"))
    if tuple(images.shape[-2:]) != tuple(edit_mask.shape[-2:]):
        raise ValueError(
            f"images are {tuple(images.shape[-2:])} but edit_mask is "
            f"{tuple(edit_mask.shape[-2:])} (H, W); pass the mask of the full result"
        )
    crops = []
    for index in range(images.shape[0]):
        box = mask_bbox(edit_mask[index : index + 1], threshold=0.5)
        if box is None:
            raise ValueError(f"edit_mask[{index}] marks nothing (no value above 0.5): no region")
        x0, y0, x1, y1 = box
        crops.append(images[index, :, y0:y1, x0:x1])
    return crops


def region_clip_score(
    images: torch.Tensor,
    edit_mask: torch.Tensor,
    exemplar,
    tower: ImageTower,
    *,
    exemplar_mask=None,
    size: int | None = None,
) -> torch.Tensor:
    """100 x cos(CLIP(exemplar), CLIP(edited region)) for each image: (N,) float32.

    images: (N, 3, H, W) in [0, 1], the candidates (full results, stitched); edit_mask:
    (1 or N, 1, H, W), the user's edit mask; exemplar: one picture (any input `prepare` reads),
    `exemplar_mask` cutting out its object as the edit does. The region and the exemplar are
    both prepared as exemplars are for the model (8-bit, squashed to the tower's square, CLIP
    mean/std). Higher is closer; 100 is the same features.
    """
    tower = _unwrap(tower)
    size = size or _tower_size(tower)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W); got shape {tuple(images.shape)}")
    reference = prepare.prepare_exemplar(exemplar, size=size, exemplar_mask=exemplar_mask)
    if reference.shape[0] != 1:
        raise ValueError(f"exemplar: give one picture; got {reference.shape[0]}")
    regions = [
        prepare.prepare_exemplar(prepare.to_pil(crop), size=size)
        for crop in region_crops(images, edit_mask)
    ]
    features = image_features(tower, torch.cat([reference, *regions]))
    features = torch.nn.functional.normalize(features, dim=-1)
    return 100 * (features[1:] @ features[0])


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """The Frechet distance between Gaussians fitted to two feature sets (N, D) and (M, D):
    |mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2), FID's formula.

    In float64, with both matrix square roots taken of symmetric matrices by eigendecomposition
    (negative round-off eigenvalues clipped to 0), so it stays real and stable when a covariance
    is singular (fewer samples than dimensions), where the product form sqrtm(C_a C_b) is not.
    """
    a, b = (torch.as_tensor(f).double() for f in (features_a, features_b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"features must be (N, D) and (M, D) with the same D; got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if min(a.shape[0], b.shape[0]) < 2:
        raise ValueError("each feature set needs at least 2 pictures to have a covariance")
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_a = _sqrt_psd(cov_a)
    middle = _sqrt_psd(root_a @ cov_b @ root_a)
    mean_term = (a.mean(0) - b.mean(0)).square().sum()
    return float(mean_term + cov_a.trace() + cov_b.trace() - 2 * middle.trace())


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    symmetric = (matrix + matrix.T) / 2
    values, vectors = torch.linalg.eigh(symmetric)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def clip_fid(results: Sequence, references: Sequence, tower: ImageTower, size: int | None = None) -> float:
    """FID on CLIP image features (the paper's "FID") between two sets of pictures (anything
    `prepare` reads, any sizes), each prepared as exemplars are (squashed to the tower's square,
    CLIP mean/std)."""
    tower = _unwrap(tower)
    size = size or _tower_size(tower)
    features = [
        image_features(tower, torch.cat([prepare.prepare_exemplar(picture, size=size) for picture in pictures]))
        for pictures in (results, references)
    ]
    return frechet_distance(*features)


def toy_agreement(
    results: torch.Tensor, edit_mask: torch.Tensor, colours: Sequence[int], shapes: Sequence[int]
) -> dict[str, float]:
    """How often toy-world edits show the exemplar's object: the share of results whose edited
    region (mask > 0.5) is dominated by the exemplar's palette colour, and whose blob of that
    colour has the exemplar's shape. results (N, 3, H, W) in [0, 1]; edit_mask (1 or N, 1, H, W);
    colours, shapes: the exemplars' indices into `toy.COLOURS` and `toy.SHAPES`."""
    from .train import toy

    results, edit_mask = prepare.broadcast_batch(results, edit_mask, names=("results", "edit_mask"))
    if not len(colours) == len(shapes) == results.shape[0]:
        raise ValueError(f"need one colour and one shape per result ({results.shape[0]})")
    colour_hits = shape_hits = 0
    for picture, mask, colour, shape in zip(results, edit_mask, colours, shapes, strict=True):
        rgb = picture.permute(1, 2, 0).float().numpy()
        region = mask[0].numpy() > 0.5
        found = toy.dominant_colour(rgb, region)
        if found is None:
            continue
        colour_hits += found == colour
        shape_hits += toy.classify_shape(toy.colour_mask(rgb, region, found)) == shape
    count = results.shape[0]
    return {"colour": colour_hits / count, "shape": shape_hits / count, "count": count}


def toy_world_agreement(
    pipe, cases: Sequence, guidance: float, *, shuffle: bool = False, steps: int = 25,
    sampler: str = "ddim", seed: int = 0, chunk: int = 32,
) -> dict[str, float]:
    """Edit the held-out toy cases (`toy.toy_cases`) with `pipe` and measure `toy_agreement`
    against each case's exemplar. shuffle: the control, each edit is given another case's
    exemplar (a fixed derangement) but scored against its own."""
    cases = list(cases)
    given = [cases[(i + 1) % len(cases)] for i in range(len(cases))] if shuffle else cases
    pictures = []
    for start in range(0, len(cases), chunk):
        part = slice(start, start + chunk)
        result = pipe.run(
            [c.scene for c in cases[part]], [c.mask for c in cases[part]],
            [c.exemplar for c in given[part]], steps=steps, guidance=guidance, sampler=sampler,
            seed=seed + start, region="full",
        )
        pictures.append(result.images)
    masks = torch.stack([torch.from_numpy(c.mask).float()[None] / 255 for c in cases])
    return toy_agreement(torch.cat(pictures), masks, [c.colour for c in cases], [c.shape for c in cases])
