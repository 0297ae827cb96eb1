"""The exemplar's strong augmentation: flip, rotation, blur, elastic deformation.

As the reference (albumentations HorizontalFlip p 0.5, Rotate limit 20 with reflected borders,
Blur p 0.3 with a 3..7 px box, ElasticTransform p 0.3 with alpha 1, sigma 50, alpha_affine 50,
all at 224 px). Sizes given in pixels at 224 px scale with the picture, so a 32 px encoder
gets the same relative distortion. Flip, rotation and deformation are one resampling pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

REFERENCE_SIZE = 224  # the encoder size the reference's pixel constants belong to


@dataclass(frozen=True)
class Augmentation:
    hflip_p: float = 0.5
    rotate_degrees: float = 20.0
    blur_p: float = 0.3
    blur_radius: tuple[int, int] = (1, 3)  # box half-widths at 224 px: kernels 3..7
    elastic_p: float = 0.3
    elastic_affine: float = 50.0  # anchor-point jitter at 224 px (albumentations alpha_affine)
    elastic_alpha: float = 1.0  # smooth displacement field amplitude at 224 px


def _elastic_affine(rng: np.random.Generator, jitter: float) -> np.ndarray:
    """A random affine (2x3, normalised coordinates) moving three anchor points, a third of the
    side from the centre, by up to `jitter` (normalised units) each."""
    anchors = np.array([[2 / 3, -2 / 3], [2 / 3, 2 / 3], [-2 / 3, -2 / 3]])
    moved = anchors + rng.uniform(-jitter, jitter, anchors.shape)
    # output points `moved` sample the input at `anchors`: solve A [moved, 1] = anchors
    design = np.concatenate([moved, np.ones((3, 1))], axis=1)
    return np.linalg.solve(design, anchors).T


def _smooth_field(rng: np.random.Generator, size: int, amplitude: float) -> torch.Tensor:
    """A smooth random displacement (1, size, size, 2) of up to `amplitude` normalised units."""
    coarse = torch.from_numpy(rng.uniform(-1, 1, (1, 2, 4, 4))).float()
    field = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    return (field * amplitude).permute(0, 2, 3, 1)


def augment_exemplar(
    picture: Image.Image, rng: np.random.Generator, augmentation: Augmentation = Augmentation()
) -> Image.Image:
    """A randomly flipped, rotated, blurred and deformed copy of a square RGB picture."""
    size = picture.width
    if picture.height != size:
        raise ValueError(f"augment_exemplar takes a square picture; got {picture.size}")
    scale = size / REFERENCE_SIZE
    matrix = np.eye(3)
    if rng.random() < augmentation.hflip_p:
        matrix = matrix @ np.diag([-1.0, 1.0, 1.0])
    angle = math.radians(rng.uniform(-augmentation.rotate_degrees, augmentation.rotate_degrees))
    cos, sin = math.cos(angle), math.sin(angle)
    matrix = matrix @ np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])
    elastic = rng.random() < augmentation.elastic_p
    if elastic:
        jitter = 2 * augmentation.elastic_affine / REFERENCE_SIZE  # pixels -> normalised units
        matrix = matrix @ np.vstack([_elastic_affine(rng, jitter), [0, 0, 1]])
    pixels = torch.from_numpy(np.asarray(picture.convert("RGB"), dtype=np.float32)).permute(2, 0, 1)
    theta = torch.from_numpy(matrix[:2]).float()[None]
    grid = F.affine_grid(theta, [1, 3, size, size], align_corners=False)
    if elastic:
        grid = grid + _smooth_field(rng, size, 2 * augmentation.elastic_alpha / REFERENCE_SIZE)
    warped = F.grid_sample(
        pixels[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )[0]
    array = warped.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    result = Image.fromarray(np.ascontiguousarray(array), mode="RGB")
    if rng.random() < augmentation.blur_p:
        low, high = augmentation.blur_radius
        result = result.filter(ImageFilter.BoxBlur(int(rng.integers(low, high + 1)) * scale))
    return result
