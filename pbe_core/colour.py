"""Colour match: give the edited region the colour statistics of its surroundings (pure).

The model can leave a colour cast on what it paints (the reference's issue #64). After the
stitch, `colour_match` moves the per-channel mean and standard deviation of the edited region
towards those of a ring of untouched pixels around it (Reinhard et al. 2001, "Color Transfer
between Images"), blended in through the same grown, feathered weight the stitch uses.

The statistics are matched in CIE L*a*b* (D65), not in RGB: Lab separates lightness from the
two colour-opponent axes and is close to perceptually uniform, so a cast moves a* and b*
without dragging the lightness along, and equal steps are equal visible changes; RGB channels
are strongly correlated, so matching them one by one also shifts hue where only brightness
differed. Every pixel where the weight is 0 (outside the feathered mask) is returned bit for bit.
"""

from __future__ import annotations

import warnings

import torch

from .regions import feather_mask, grow_mask, mask_bbox

# sRGB (D65) <-> CIE XYZ, and the D65 white point.
_RGB_TO_XYZ = torch.tensor(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
     [0.0193339, 0.1191920, 0.9503041]]
)
_WHITE = torch.tensor([0.95047, 1.0, 1.08883])
_EPSILON = 216 / 24389  # CIE's (6/29)^3
_KAPPA = 24389 / 27
_SPREAD_FLOOR = 0.5  # Lab units: a flat region or ring neither explodes nor zeroes the spread


def _linear(srgb: torch.Tensor) -> torch.Tensor:
    return torch.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def _gamma(linear: torch.Tensor) -> torch.Tensor:
    linear = linear.clamp(min=0)
    return torch.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) sRGB in [0, 1] -> L*a*b* (L in 0..100), float32."""
    rgb = rgb.float()
    xyz = torch.einsum("ij,bjhw->bihw", _RGB_TO_XYZ.to(rgb.device), _linear(rgb))
    xyz = xyz / _WHITE.to(rgb.device).view(1, 3, 1, 1)
    f = torch.where(xyz > _EPSILON, xyz.clamp(min=_EPSILON) ** (1 / 3), (_KAPPA * xyz + 16) / 116)
    fx, fy, fz = f.unbind(1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """L*a*b* -> sRGB, clamped to [0, 1]."""
    fy = (lab[:, 0] + 16) / 116
    f = torch.stack([fy + lab[:, 1] / 500, fy, fy - lab[:, 2] / 200], dim=1)
    xyz = torch.where(f**3 > _EPSILON, f**3, (116 * f - 16) / _KAPPA)
    xyz = xyz * _WHITE.to(lab.device).view(1, 3, 1, 1)
    rgb = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_RGB_TO_XYZ).to(lab.device), xyz)
    return _gamma(rgb).clamp(0, 1)


def _moments(values: torch.Tensor, where: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of values (3, H, W) over a (H, W) bool mask."""
    picked = values[:, where]
    return picked.mean(dim=1), picked.std(dim=1, correction=0)


def colour_match(
    images: torch.Tensor,
    edit_mask: torch.Tensor,
    strength: float = 1.0,
    *,
    grow: int = 0,
    feather: int = 0,
    ring: int = 16,
) -> torch.Tensor:
    """Match the edited region's Lab mean/std to a ring of its surroundings.

    images: (B, 3, H, W) in [0, 1], the stitched results; edit_mask: (1 or B, 1, H, W), the
    user's edit mask, with the `grow` and `feather` the stitch used. The statistics are taken
    from the region (grown mask > 0.5, what the model painted) and from the ring (pixels at most
    `ring` pixels from the feathered mask, outside it). Each pixel moves by
    strength x weight towards its matched colour, weight being the stitch's feathered mask;
    where the weight is 0 the result is `images` bit for bit. strength 0 returns the input.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"colour_match strength must be within 0..1; got {strength}")
    if ring < 1:
        raise ValueError(f"ring must be at least 1 pixel; got {ring}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W); got shape {tuple(images.shape)}")
    if edit_mask.ndim != 4 or edit_mask.shape[1] != 1 or edit_mask.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"edit_mask must be (B, 1, H, W) of the images' size {tuple(images.shape[-2:])}; "
            f"got {tuple(edit_mask.shape)}"
        )
    if edit_mask.shape[0] not in (1, images.shape[0]):
        raise ValueError(f"edit_mask has {edit_mask.shape[0]} masks for {images.shape[0]} images")
    result = images.clone(memory_format=torch.contiguous_format)
    if strength == 0:
        return result
    height, width = images.shape[-2:]
    reach = abs(grow) + feather + ring
    for index in range(images.shape[0]):
        mask = edit_mask[min(index, edit_mask.shape[0] - 1)][None]
        box = mask_bbox(mask)
        if box is None:
            continue
        # work in the window the weight and the ring can reach, never the whole photo
        x0, y0 = max(box[0] - 2 * reach, 0), max(box[1] - 2 * reach, 0)
        x1, y1 = min(box[2] + 2 * reach, width), min(box[3] + 2 * reach, height)
        window = mask[..., y0:y1, x0:x1]
        grown = grow_mask(window, grow)
        weight = feather_mask(grown, feather)
        region = (grown > 0.5)[0, 0]
        surroundings = (grow_mask((weight > 0).float(), ring) > 0)[0, 0] & (weight == 0)[0, 0]
        if not region.any() or not surroundings.any():
            warnings.warn(
                f"colour_match: image {index} has no {'region' if not region.any() else 'ring'} "
                "to take statistics from (the mask covers all or nothing); left unchanged",
                stacklevel=2,
            )
            continue
        before = images[index : index + 1, :, y0:y1, x0:x1]
        lab = rgb_to_lab(before)
        region_mean, region_std = _moments(lab[0], region)
        ring_mean, ring_std = _moments(lab[0], surroundings)
        scale = (ring_std + _SPREAD_FLOOR) / (region_std + _SPREAD_FLOOR)
        matched_lab = (lab - region_mean.view(1, 3, 1, 1)) * scale.view(1, 3, 1, 1)
        matched = lab_to_rgb(matched_lab + ring_mean.view(1, 3, 1, 1)).to(before.dtype)
        amount = (weight * strength).to(before.dtype)
        blended = torch.where(weight > 0, before + amount * (matched - before), before)
        result[index : index + 1, :, y0:y1, x0:x1] = blended
    return result
