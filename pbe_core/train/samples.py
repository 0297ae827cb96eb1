"""One training sample of the paper's self-supervised recipe, from a picture and its object.

No triplets exist, so the picture is its own target: the object's padded box, cropped and
strongly augmented, is the exemplar; a mask around the object (its box extended at random, or
half the time an irregular Bezier-bounded shape) is erased; a random square crop containing
the mask, resized to the training size, is the scene. Keep-mask, masked image and latent mask
come from `prepare` and the crop from `regions`, the functions inference uses.

Pixel constants (the 10 px exemplar pad, the 5 px polygon jitter) are the reference's for its
photos, whose crops are resized to 512 px; here they are pixels of a 512 px short side and scale
with the picture's short side, so a 64 px picture gets a 1.25 px pad, a 1024 px one 20 px.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw

from .. import prepare, regions
from .augment import Augmentation, augment_exemplar

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), half-open, in picture pixels
PIXEL_SCALE = 512  # short side at which the pixel constants hold


@dataclass(frozen=True)
class Recipe:
    """Every probability and size of the recipe, with the paper's defaults (the training size
    and the encoder's image size come from the run and the model)."""

    exemplar_pad: float = 10.0  # pixels at a 512 px short side
    augmentation: Augmentation = field(default_factory=Augmentation)
    extend_fraction: float = 0.4  # each side extended by up to this much of its free space
    irregular_p: float = 0.5  # `arbitrary_mask_percent`
    curve_points: int = 18  # per quadratic Bezier curve, four curves
    curve_jitter: float = 5.0  # pixels at a 512 px short side
    crop_margin: float = 0.6  # the square crop shrinks by up to this much of its free space

    def __post_init__(self) -> None:
        for name in ("irregular_p", "extend_fraction", "crop_margin"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in 0..1; got {getattr(self, name)}")


@dataclass
class Sample:
    """Tensors without a batch axis. image, masked: (3, R, R) in [-1, 1]; keep: (1, R, R), 1 =
    keep; latent_keep: (1, R/8, R/8), bilinear, unrounded; exemplar: (3, S, S) CLIP-normalised."""

    image: torch.Tensor
    masked: torch.Tensor
    keep: torch.Tensor
    latent_keep: torch.Tensor
    exemplar: torch.Tensor
    box: Box  # the object, in picture pixels
    extended: Box  # the extended box the mask lies in
    window: Box  # the square crop


def object_box(region, size: tuple[int, int]) -> Box | None:
    """The object's box from a mask (white = object; box of values above 0.5) or a box
    (x0, y0, x1, y1), clipped to the picture of `size` (W, H); None if empty."""
    width, height = size
    if isinstance(region, (tuple, list)) and len(region) == 4 and not isinstance(region[0], Image.Image):
        x0, y0, x1, y1 = (int(round(float(v))) for v in region)
    else:
        mask = prepare.mask_to_tensor(region, "object mask")
        if tuple(mask.shape[-2:]) != (height, width):
            raise ValueError(
                f"object mask is {mask.shape[-1]}x{mask.shape[-2]}, picture {width}x{height}"
            )
        found = regions.mask_bbox(mask, threshold=0.5)
        if found is None:
            return None
        x0, y0, x1, y1 = found
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def pad_box(box: Box, pad: int, size: tuple[int, int]) -> Box:
    x0, y0, x1, y1 = box
    return max(x0 - pad, 0), max(y0 - pad, 0), min(x1 + pad, size[0]), min(y1 + pad, size[1])


def extend_box(box: Box, size: tuple[int, int], fraction: float, rng: np.random.Generator) -> Box:
    """Each side moved out by a random integer amount up to `fraction` of its free space."""
    x0, y0, x1, y1 = box
    width, height = size

    def grow(free: int) -> int:
        return int(rng.integers(0, int(fraction * free) + 1))

    return x0 - grow(x0), y0 - grow(y0), x1 + grow(width - x1), y1 + grow(height - y1)


def _bezier(start, control, end, count: int) -> np.ndarray:
    # t = 1/(count+2) .. count/(count+2): the reference's 0.05 .. 0.9 for 18 points
    t = np.arange(1, count + 1)[:, None] / (count + 2)
    start, control, end = (np.asarray(p, dtype=np.float64) for p in (start, control, end))
    return (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end


def irregular_mask(
    box: Box, extended: Box, size: tuple[int, int], points: int, jitter: float,
    rng: np.random.Generator,
) -> Image.Image:
    """The irregular edit mask (white = edit): four quadratic Bezier curves from corner to corner
    of the box, bulging towards the extended box, `points` points each jittered by up to `jitter`
    pixels, filled as a polygon. Points are kept inside the extended box (the reference lets the
    jitter cross it), so the mask never leaves the region the crop is built to contain."""
    x0, y0, x1, y1 = box
    ex0, ey0, ex1, ey1 = extended
    mid_x, mid_y = (x0 + x1) / 2, (y0 + y1) / 2
    curves = (
        ((x0, y0), (mid_x, ey0), (x1, y0)),  # top, left to right
        ((x1, y0), (ex1, mid_y), (x1, y1)),  # right, downwards
        ((x1, y1), (mid_x, ey1), (x0, y1)),  # bottom, right to left
        ((x0, y1), (ex0, mid_y), (x0, y0)),  # left, upwards
    )
    outline = np.concatenate([_bezier(*curve, points) for curve in curves])
    reach = int(round(jitter))
    outline = outline + rng.integers(-reach, reach + 1, outline.shape)
    outline[:, 0] = outline[:, 0].clip(ex0, ex1 - 1)
    outline[:, 1] = outline[:, 1].clip(ey0, ey1 - 1)
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).polygon([tuple(p) for p in outline.tolist()], fill=255)
    return mask


def box_mask(box: Box, size: tuple[int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def square_window(extended: Box, size: tuple[int, int], margin: float, rng: np.random.Generator) -> Box:
    """A square of the short side placed at random so that it contains the extended box, then
    shrunk on every side by a random amount up to `margin` of its smallest free space. When the
    box is longer than the short side, the whole picture (squashed later, as the reference)."""
    width, height = size
    side = min(width, height)
    ex0, ey0, ex1, ey1 = extended
    low_x, high_x = max(ex1 - side, 0), min(ex0 + side, width) - side
    low_y, high_y = max(ey1 - side, 0), min(ey0 + side, height) - side
    if high_x < low_x or high_y < low_y:
        return 0, 0, width, height
    left, top = int(rng.integers(low_x, high_x + 1)), int(rng.integers(low_y, high_y + 1))
    free = min(ex0 - left, ey0 - top, left + side - ex1, top + side - ey1)
    shrink = int(rng.integers(0, int(margin * max(free, 0)) + 1))
    return left + shrink, top + shrink, left + side - shrink, top + side - shrink


def _scaled(pixels: float, size: tuple[int, int]) -> float:
    return pixels * min(size) / PIXEL_SCALE


def exemplar_pixels(
    picture: Image.Image, box: Box, size: int, recipe: Recipe, rng: np.random.Generator
) -> torch.Tensor:
    """The object's padded box, cropped, squashed to the encoder's size, augmented and
    normalised by `prepare.prepare_exemplar` (its resize is then the identity): (3, S, S)."""
    padded = pad_box(box, round(_scaled(recipe.exemplar_pad, picture.size)), picture.size)
    crop = picture.crop(padded).resize((size, size), Image.Resampling.BICUBIC)
    augmented = augment_exemplar(crop, rng, recipe.augmentation)
    return prepare.prepare_exemplar(augmented, size=size, mode="squash")[0]


def build_sample(
    picture: Image.Image, region, rng: np.random.Generator, *, resolution: int = 512,
    exemplar_size: int = 224, recipe: Recipe = Recipe(),
) -> Sample:
    """One sample from an RGB picture and its object (a mask, white = object, or a box):
    the scene at `resolution` (a multiple of 8), the exemplar at `exemplar_size`."""
    if resolution < 8 or resolution % 8:
        raise ValueError(f"resolution must be a multiple of 8; got {resolution}")
    picture = picture.convert("RGB")
    box = object_box(region, picture.size)
    if box is None:
        raise ValueError("the object region is empty")
    exemplar = exemplar_pixels(picture, box, exemplar_size, recipe, rng)
    extended = extend_box(box, picture.size, recipe.extend_fraction, rng)
    if rng.random() < recipe.irregular_p:
        jitter = _scaled(recipe.curve_jitter, picture.size)
        edit = irregular_mask(box, extended, picture.size, recipe.curve_points, jitter, rng)
    else:
        edit = box_mask(extended, picture.size)
    window = square_window(extended, picture.size, recipe.crop_margin, rng)
    plan = regions.Region(*window, resolution, resolution, *picture.size)
    image, edit_mask = regions.crop(
        prepare.image_to_tensor(picture, "picture"), prepare.mask_to_tensor(edit, "mask"), plan
    )
    keep = prepare.edit_to_keep_mask(edit_mask)
    image = prepare.to_model_range(image)
    latent_size = (resolution // 8, resolution // 8)
    return Sample(
        image=image[0],
        masked=prepare.masked_image(image, keep)[0],
        keep=keep[0],
        latent_keep=prepare.latent_keep_mask(keep, latent_size)[0],
        exemplar=exemplar,
        box=box,
        extended=extended,
        window=window,
    )
