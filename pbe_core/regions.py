"""Where to edit: the crop around the mask, and the stitch back (mask geometry: `masks`).

Images are (B, 3, H, W) in [0, 1]; masks (B, 1, H, W) in [0, 1]. Nothing here flips a mask's
polarity or binarises it: the functions take the user's EDIT mask (1 = edit) as `prepare` left
it, and `prepare.edit_to_keep_mask` runs on the cropped mask afterwards.

Memory: `plan_region` only reduces the mask to row and column maxima, `crop` touches only the
box (a view of the image, padded) and the working size, and `stitch` allocates the output plus
box-sized temporaries, so a small mask in a large photo is never processed at full size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# The mask geometry is imported from here by the nodes and the training code, as before the split.
from .masks import (  # noqa: F401
    Box,
    Kernel,
    check_mask,
    feather_mask,
    fill_holes,
    grow_mask,
    hipass_mask,
    mask_bbox,
    mask_to_bbox_mask,
)
from .prepare import broadcast_batch


@dataclass(frozen=True)
class Region:
    """A crop: box (x0, y0, x1, y1) in source pixels, half-open, which may reach beyond the
    image (that part is padded by edge replication), and the working size it is resized to."""

    x0: int
    y0: int
    x1: int
    y1: int
    width: int  # working size, what the model sees
    height: int
    image_width: int  # the source image the box refers to
    image_height: int

    def __post_init__(self) -> None:
        if self.x1 <= self.x0 or self.y1 <= self.y0 or self.width < 1 or self.height < 1:
            raise ValueError(f"empty region: {self}")
        if (
            self.x1 <= 0
            or self.y1 <= 0
            or self.x0 >= self.image_width
            or self.y0 >= self.image_height
        ):
            raise ValueError(f"region box lies outside the image: {self}")

    @property
    def box(self) -> Box:
        return self.x0, self.y0, self.x1, self.y1

    @property
    def box_width(self) -> int:
        return self.x1 - self.x0

    @property
    def box_height(self) -> int:
        return self.y1 - self.y0

    @property
    def visible(self) -> Box:
        """The part of the box inside the image."""
        return (
            max(self.x0, 0),
            max(self.y0, 0),
            min(self.x1, self.image_width),
            min(self.y1, self.image_height),
        )


def _ceil_to(value: float, multiple: int) -> int:
    return max(multiple, math.ceil(value / multiple - 1e-9) * multiple)


def _place(centre: float, size: int, extent: int) -> int:
    """Start of a span of `size` around `centre`, shifted inside [0, extent) when it fits."""
    if size >= extent:
        return (extent - size) // 2
    return min(max(math.floor(centre - size / 2), 0), extent - size)


def plan_region(
    image_hw: Sequence[int],
    edit_mask: torch.Tensor,
    context: float = 1.5,
    resolution: int = 512,
    multiple: int = 8,
    min_size: int = 128,
    margin: int = 0,
    max_aspect: float = 2.0,
    context_mask: torch.Tensor | None = None,
) -> Region:
    """The crop to edit: the mask's box (grown by `margin` pixels, e.g. stitch's grow + feather)
    scaled by `context` around its centre, widened to take in the box of `context_mask` (an
    area the model should see, e.g. the table a cup stands on; (1 or B, 1, H, W), non-zero =
    include), at least `min_size` pixels a side so a tiny mask still gets surroundings, no
    larger than the image, its aspect limited to `max_aspect` (1.0: square, as trained).
    The working size has its longer side `resolution` and both sides multiples of `multiple`;
    the box's shorter side is matched to the working aspect. The box is shifted inside the image
    when it fits, else centred on it and padded. An empty mask plans the whole image.
    """
    image_h, image_w = (int(s) for s in image_hw)
    check_mask(edit_mask, "edit_mask")
    if tuple(edit_mask.shape[-2:]) != (image_h, image_w):
        raise ValueError(
            f"edit_mask is {tuple(edit_mask.shape[-2:])}, image is {(image_h, image_w)}"
        )
    if context < 1 or max_aspect < 1 or multiple < 1 or min_size < 1 or margin < 0:
        raise ValueError(
            "need context >= 1, max_aspect >= 1, multiple >= 1, min_size >= 1, margin >= 0"
        )
    resolution = _ceil_to(round(resolution / multiple) * multiple, multiple)
    x0, y0, x1, y1 = mask_bbox(edit_mask) or (0, 0, image_w, image_h)
    x0, y0, x1, y1 = (
        max(x0 - margin, 0),
        max(y0 - margin, 0),
        min(x1 + margin, image_w),
        min(y1 + margin, image_h),
    )
    centre_x, centre_y = (x0 + x1) / 2, (y0 + y1) / 2
    span_w, span_h = (x1 - x0) * context, (y1 - y0) * context
    if context_mask is not None:
        check_mask(context_mask, "context_mask")
        if tuple(context_mask.shape[-2:]) != (image_h, image_w):
            raise ValueError(
                f"context_mask is {tuple(context_mask.shape[-2:])}, image is {(image_h, image_w)}"
            )
        extra = mask_bbox(context_mask)
        if extra is not None:
            # whole pixels, so that rounding the box to the working aspect never cuts the union
            left = math.floor(min(centre_x - span_w / 2, extra[0]))
            right = math.ceil(max(centre_x + span_w / 2, extra[2]))
            top = math.floor(min(centre_y - span_h / 2, extra[1]))
            bottom = math.ceil(max(centre_y + span_h / 2, extra[3]))
            centre_x, centre_y, span_w, span_h = (left + right) / 2, (top + bottom) / 2, right - left, bottom - top
    want_w = min(max(span_w, min_size), image_w)
    want_h = min(max(span_h, min_size), image_h)
    want_w, want_h = max(want_w, want_h / max_aspect), max(want_h, want_w / max_aspect)
    if want_w >= want_h:
        box_w, work_w = math.ceil(want_w), resolution
        work_h = min(_ceil_to(want_h * resolution / box_w, multiple), resolution)
        box_h = math.floor(box_w * work_h / resolution + 0.5)
    else:
        box_h, work_h = math.ceil(want_h), resolution
        work_w = min(_ceil_to(want_w * resolution / box_h, multiple), resolution)
        box_w = math.floor(box_h * work_w / resolution + 0.5)
    left = _place(centre_x, box_w, image_w)
    top = _place(centre_y, box_h, image_h)
    return Region(left, top, left + box_w, top + box_h, work_w, work_h, image_w, image_h)


def plan_full(image_hw: Sequence[int], multiple: int = 8) -> Region:
    """The whole image at its own size, padded on the right and bottom to a multiple."""
    image_h, image_w = (int(s) for s in image_hw)
    width, height = _ceil_to(image_w, multiple), _ceil_to(image_h, multiple)
    return Region(0, 0, width, height, width, height, image_w, image_h)


def _check_source(tensor: torch.Tensor, region: Region, name: str) -> None:
    if tensor.ndim != 4 or tuple(tensor.shape[-2:]) != (region.image_height, region.image_width):
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)}; the region was planned for a "
            f"{region.image_width}x{region.image_height} image (B, C, H, W)"
        )


def _resize(pixels: torch.Tensor, size_hw: tuple[int, int], mode: str) -> torch.Tensor:
    """Antialiased resize (PIL-like in both directions); the identity when sizes agree."""
    if tuple(pixels.shape[-2:]) == size_hw:
        return pixels
    resized = F.interpolate(pixels, size=size_hw, mode=mode, align_corners=False, antialias=True)
    return resized.clamp(0, 1)


def _cut(pixels: torch.Tensor, region: Region, mode: str) -> torch.Tensor:
    vx0, vy0, vx1, vy1 = region.visible
    window = pixels[..., vy0:vy1, vx0:vx1]  # a view: nothing outside the box is touched
    pads = (vx0 - region.x0, region.x1 - vx1, vy0 - region.y0, region.y1 - vy1)
    if any(pads):
        window = F.pad(window, pads, mode="replicate")
    return _resize(window, (region.height, region.width), mode)


def crop(
    images: torch.Tensor, masks: torch.Tensor, region: Region
) -> tuple[torch.Tensor, torch.Tensor]:
    """The region of images and edit masks at the working size.

    Images: bicubic, antialiased when shrinking; masks: bilinear (antialiased), left soft for
    `edit_to_keep_mask` to binarise. Padding beyond the image replicates the edge.
    """
    _check_source(images, region, "images")
    _check_source(masks, region, "masks")
    check_mask(masks, "masks")
    images, masks = broadcast_batch(images, masks, names=("images", "masks"))
    return _cut(images, region, "bicubic"), _cut(masks, region, "bilinear")


def stitch(
    original: torch.Tensor,
    edited_crop: torch.Tensor,
    edit_mask: torch.Tensor,
    region: Region,
    grow: int = 0,
    feather: int = 0,
) -> torch.Tensor:
    """Put an edited crop back into the full image.

    The crop is resized to the box and blended through weight = feather_mask(grow_mask(edit_mask,
    grow), feather) inside the box; wherever the weight is 0 (and everywhere outside the box) the
    result is bit-identical to `original`. Plan the region with margin >= grow + feather, or the
    weight is cut off at the box's edge.
    """
    _check_source(original, region, "original")
    _check_source(edit_mask, region, "edit_mask")
    check_mask(edit_mask, "edit_mask")
    if tuple(edited_crop.shape[-2:]) != (region.height, region.width):
        raise ValueError(
            f"edited_crop is {tuple(edited_crop.shape[-2:])}; the region's working size is "
            f"{(region.height, region.width)} (H, W)"
        )
    original, edited_crop, edit_mask = broadcast_batch(
        original, edited_crop, edit_mask, names=("original", "edited_crop", "edit_mask")
    )
    vx0, vy0, vx1, vy1 = region.visible
    # the weight near the box depends on the mask up to |grow| + feather pixels away
    reach = abs(grow) + feather
    wx0, wy0 = max(vx0 - reach, 0), max(vy0 - reach, 0)
    wx1, wy1 = min(vx1 + reach, region.image_width), min(vy1 + reach, region.image_height)
    weight = feather_mask(grow_mask(edit_mask[..., wy0:wy1, wx0:wx1], grow), feather)
    weight = weight[..., vy0 - wy0 : vy1 - wy0, vx0 - wx0 : vx1 - wx0]
    edited = _resize(edited_crop, (region.box_height, region.box_width), "bicubic")
    edited = edited[..., vy0 - region.y0 : vy1 - region.y0, vx0 - region.x0 : vx1 - region.x0]
    before = original[..., vy0:vy1, vx0:vx1]
    blended = torch.where(
        weight > 0, before * (1 - weight) + edited.to(before.dtype) * weight, before
    )
    result = original.clone(memory_format=torch.contiguous_format)
    result[..., vy0:vy1, vx0:vx1] = blended
    return result
