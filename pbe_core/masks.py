"""Mask geometry (pure): bounding boxes, exact growth, feathering, hole filling, faint values.

Masks are (B, 1, H, W) in [0, 1], the user's EDIT mask (1 = edit) as `prepare` left it. Nothing
here flips a mask's polarity; `fill_holes` and `hipass_mask` only raise enclosed pixels to 1 or
drop faint ones to 0, and `prepare.edit_to_keep_mask` still binarises afterwards.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), half-open, in source pixels
Kernel = Literal["square", "round"]


def check_mask(mask: torch.Tensor, name: str = "mask") -> None:
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(f"{name} must be (B, 1, H, W); got shape {tuple(mask.shape)}")


def mask_bbox(mask: torch.Tensor, threshold: float = 0.0) -> Box | None:
    """Box of the pixels above `threshold`, as the union over the batch; None if there are none.

    The default (any non-zero value) covers every pixel a soft mask can touch.
    """
    check_mask(mask)
    rows = mask.amax(dim=(0, 1, 3)) > threshold
    cols = mask.amax(dim=(0, 1, 2)) > threshold
    if not rows.any():
        return None
    ys, xs = rows.nonzero().flatten(), cols.nonzero().flatten()
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def _max_filter(mask: torch.Tensor, radius: int, kernel: Kernel) -> torch.Tensor:
    """Grey-scale dilation by a flat square or disc; pixels outside the image are ignored."""
    if kernel == "square":  # separable: a row maximum, then a column maximum
        rows = F.max_pool2d(mask, (1, 2 * radius + 1), stride=1, padding=(0, radius))
        return F.max_pool2d(rows, (2 * radius + 1, 1), stride=1, padding=(radius, 0))
    if kernel != "round":
        raise ValueError(f"kernel must be 'square' or 'round'; got {kernel!r}")
    # A disc is a stack of row segments of half-width isqrt(r^2 - dy^2): widen a running
    # segment maximum one pixel at a time and fold in each row offset once its width is reached.
    height, width = mask.shape[-2:]
    segment = F.pad(mask, (radius,) * 4, value=-math.inf)
    result = torch.full_like(mask, -math.inf)
    for half in range(radius + 1):
        if half:
            segment = F.max_pool2d(segment, (1, 3), stride=1, padding=(0, 1))
        for dy in range(-radius, radius + 1):
            if math.isqrt(radius * radius - dy * dy) == half:
                rows = segment[..., radius + dy : radius + dy + height, radius : radius + width]
                result = torch.maximum(result, rows)
    return result


def grow_mask(mask: torch.Tensor, pixels: int, kernel: Kernel = "round") -> torch.Tensor:
    """Exact dilation (pixels > 0) or erosion (pixels < 0) by a square or round kernel.

    Pixels beyond the image border count as neither in nor out, so a mask touching the border
    does not shrink away from it.
    """
    check_mask(mask)
    if pixels == 0:
        return mask
    if pixels > 0:
        return _max_filter(mask, pixels, kernel)
    return -_max_filter(-mask, -pixels, kernel)


def _gaussian_blur(mask: torch.Tensor, half_width: int) -> torch.Tensor:
    """Separable Gaussian with support +-half_width (sigma = half_width / 2), edges replicated."""
    offsets = torch.arange(-half_width, half_width + 1, dtype=mask.dtype, device=mask.device)
    taps = torch.exp(-0.5 * (offsets / (half_width / 2)) ** 2)
    taps = taps / taps.sum()
    padded = F.pad(mask, (half_width,) * 4, mode="replicate")
    rows = F.conv2d(padded, taps.view(1, 1, 1, -1))
    return F.conv2d(rows, taps.view(1, 1, -1, 1))


def feather_mask(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Outward feather: 1 stays 1 inside the mask, falls to exactly 0 within `radius` pixels.

    Grow by radius // 2, blur with a Gaussian of support radius - radius // 2, and never go below
    the original mask. Non-zero only inside the square dilation of the mask by `radius`.
    """
    check_mask(mask)
    if radius < 0:
        raise ValueError(f"feather radius must be >= 0; got {radius}")
    if radius == 0:
        return mask
    blurred = _gaussian_blur(grow_mask(mask, radius // 2), radius - radius // 2)
    return torch.maximum(mask, blurred.clamp(0, 1))


def mask_to_bbox_mask(mask: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Each batch item's mask replaced by its filled bounding box (empty items stay empty)."""
    check_mask(mask)
    boxes = torch.zeros_like(mask)
    for index in range(mask.shape[0]):
        box = mask_bbox(mask[index : index + 1], threshold)
        if box is not None:
            x0, y0, x1, y1 = box
            boxes[index, :, y0:y1, x0:x1] = 1
    return boxes


def hipass_mask(mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """Values below `threshold` become 0, the rest stay as they are (soft edges kept).

    A faint haze (a blurred brush, a segmenter's low scores) no longer widens the crop, which
    takes the box of every non-zero value, nor the blend; threshold 0 returns the mask.
    """
    check_mask(mask)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"mask threshold must be within 0..1; got {threshold}")
    if threshold == 0:
        return mask
    return torch.where(mask >= threshold, mask, torch.zeros_like(mask))


def _spread_along_rows(background: torch.Tensor, reached: torch.Tensor) -> torch.Tensor:
    """Every run of background pixels in a row that holds a reached pixel is reached."""
    height, width = background.shape
    # a run's id: its row, and how many non-background pixels precede it in the row
    rows = torch.arange(height, device=background.device).view(-1, 1)
    runs = torch.cumsum(~background, dim=1) + rows * (width + 1)
    hit = torch.zeros(height * (width + 1) + 1, dtype=torch.float32, device=background.device)
    hit.scatter_reduce_(0, runs.flatten(), reached.flatten().float(), "amax")
    return background & (hit[runs] > 0)


def fill_holes(mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Pixels enclosed by the mask (values > threshold) become 1: a hand-painted blob with gaps
    edits the whole object region instead of keeping islands of the scene inside it.

    A pixel is enclosed when no 4-connected path of pixels <= threshold leads from it to the
    image border. Each batch item alone; only its box is worked on. Other values are unchanged.
    """
    check_mask(mask)
    filled = mask.clone()
    for index in range(mask.shape[0]):
        box = mask_bbox(mask[index : index + 1], threshold)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        # the box with a frame of outside pixels, from which the background is flooded
        background = F.pad(mask[index, 0, y0:y1, x0:x1] <= threshold, (1, 1, 1, 1), value=True)
        reached = torch.zeros_like(background)
        reached[0, :] = reached[-1, :] = reached[:, 0] = reached[:, -1] = True
        while True:
            spread = _spread_along_rows(background, reached)
            spread = _spread_along_rows(background.T.contiguous(), spread.T.contiguous()).T
            if torch.equal(spread, reached):
                break
            reached = spread
        holes = (background & ~reached)[1:-1, 1:-1]
        filled[index, 0, y0:y1, x0:x1][holes] = 1
    return filled
