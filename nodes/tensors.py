"""ComfyUI tensors <-> pbe_core tensors, and the input checks every node shares (pure, no comfy).

ComfyUI: IMAGE (B, H, W, C) in [0, 1], MASK (B, H, W) or (H, W), white = 1.
pbe_core: pixels (B, 3, H, W) in [0, 1], masks (B, 1, H, W); the user's mask is an EDIT mask.
"""

from __future__ import annotations

import torch

from ..pbe_core import prepare


def image_to_pixels(image: torch.Tensor, name: str = "image") -> torch.Tensor:
    return prepare.image_to_tensor(image, name, channels_last=True)


def pixels_to_image(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.movedim(1, -1).contiguous()


PLACEHOLDER_SIZE = (64, 64)  # what Load Image hands over when its picture has no mask


def mask_to_edit_mask(mask: torch.Tensor, pixels: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """A MASK for `pixels` -> (B, 1, H, W), refused when it marks nothing (before its size is
    checked: Load Image's empty placeholder is 64x64 whatever the picture); same aspect at
    another size is resized with a warning, another aspect ratio raises ValueError naming
    `name` (pbe_core's policy)."""
    edit_mask = prepare.mask_to_tensor(mask, name)
    require_edit(edit_mask, name)
    return prepare.fit_mask_to_image(edit_mask, pixels.shape[-2:], name)


def edit_mask_to_mask(edit_mask: torch.Tensor) -> torch.Tensor:
    return edit_mask[:, 0].contiguous()


def require_edit(edit_mask: torch.Tensor, name: str = "mask") -> None:
    """Refuse a mask that marks nothing: the model would have nothing to paint."""
    if not bool(torch.all(prepare.edit_to_keep_mask(edit_mask) == 1)):
        return
    if tuple(edit_mask.shape[-2:]) == PLACEHOLDER_SIZE and not bool(edit_mask.any()):
        why = (
            "no mask was painted (Load Image gives an empty 64x64 mask when its picture has no "
            "painted mask or transparency)"
        )
    else:
        why = "no pixel is above 0.5"
    raise ValueError(
        f"{name} is empty: {why}, so there is nothing to edit. Paint the region to replace in "
        "white: right-click the Load Image node > Open in MaskEditor, paint, Save; or connect "
        "the mask you meant."
    )


def crop_to_multiple(pixels: torch.Tensor, edit_mask: torch.Tensor, multiple: int = 8):
    """Centre-crop both to a multiple of `multiple` pixels, as ComfyUI's VAE crops its input."""
    height, width = pixels.shape[-2:]
    new_h, new_w = height // multiple * multiple, width // multiple * multiple
    if min(new_h, new_w) == 0:
        raise ValueError(
            f"image is {width}x{height}: it needs at least {multiple} pixels on each side"
        )
    top, left = (height % multiple) // 2, (width % multiple) // 2
    window = (..., slice(top, top + new_h), slice(left, left + new_w))
    return pixels[window], edit_mask[window]


def parse_weights(text: str, count: int, name: str = "blend_weights") -> list[float]:
    """'1, 0.5' -> [1.0, 0.5], one per exemplar; empty text -> equal weights."""
    if not text.strip():
        return [1.0] * count
    try:
        weights = [float(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"{name}: '{text}' is not a comma-separated list of numbers, e.g. '1, 0.5'"
        ) from None
    if len(weights) != count:
        raise ValueError(
            f"{name}: {len(weights)} weights for {count} exemplar images; give one per image "
            "or leave it empty for equal weights"
        )
    return weights


def draw_region(
    pixels: torch.Tensor, edit_mask: torch.Tensor, box: tuple[int, int, int, int], size: int = 384
) -> torch.Tensor:
    """A small picture of the first image: the edit mask tinted red, outside the crop box dimmed,
    the box outlined. (1, 3, h, w) in [0, 1]."""
    height, width = pixels.shape[-2:]
    scale = min(1.0, size / max(height, width))
    out_h, out_w = max(1, round(height * scale)), max(1, round(width * scale))
    small = torch.nn.functional.interpolate(pixels[:1], size=(out_h, out_w), mode="area")
    mask = torch.nn.functional.interpolate(edit_mask[:1], size=(out_h, out_w), mode="area")
    red = torch.tensor([1.0, 0.2, 0.2]).view(1, 3, 1, 1)
    picture = small * (1 - 0.5 * mask) + red * 0.5 * mask
    x0, y0, x1, y1 = (max(0, round(v * scale)) for v in box)
    x1, y1 = min(max(x1, x0 + 1), out_w), min(max(y1, y0 + 1), out_h)
    inside = torch.zeros(1, 1, out_h, out_w, dtype=torch.bool)
    inside[..., y0:y1, x0:x1] = True
    picture = torch.where(inside, picture, picture * 0.35)
    outline = inside.clone()
    outline[..., y0 + 1 : y1 - 1, x0 + 1 : x1 - 1] = False
    return torch.where(outline, torch.ones_like(picture), picture).clamp(0, 1)
