"""Inputs -> the tensors Paint by Example takes: image, edit mask, keep-mask, exemplar.

Conventions: images are (B, 3, H, W) float32 in [0, 1]; masks (B, 1, H, W) float32 in [0, 1].
The user's mask is an EDIT mask (white / 1 = edit); `mask_to_tensor` keeps it soft and in that
polarity. `edit_to_keep_mask` is the one place in the project that binarises it and flips it into
the model's KEEP mask (1 = keep), as the reference script does.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
EXEMPLAR_GREY = 0.5  # background / padding colour of exemplars (128 once quantised to uint8)

ImageInput = Image.Image | np.ndarray | torch.Tensor | Sequence
ExemplarMode = Literal["squash", "crop", "pad"]

_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_UNIT_SLACK = 1 / 255  # float data up to 1 + this is still [0, 1] data with rounding overshoot
_CHANNELS = (1, 3, 4)


def _pil_high_depth(picture: Image.Image, name: str) -> np.ndarray:
    """16-bit and 32-bit PIL modes as arrays `_to_unit_float` scales correctly."""
    array = np.asarray(picture)
    if picture.mode == "F":
        return array.astype(np.float32)
    if picture.mode == "I":  # Pillow opens 16-bit greyscale files as "I" as well as "I;16"
        if array.min() < 0 or array.max() > 65535:
            raise ValueError(f"{name}: PIL mode 'I' values must lie in 0..65535 (16-bit data)")
    return array.astype(np.uint16)


def _to_unit_float(data: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """Scale any numeric array to float32 in [0, 1], detecting its value range.

    uint8: 0..255; uint16: 0..65535; bool: 0/1; other integers: 0/1 if max <= 1, else 0..255;
    floats: 0..1 if max <= 1 + 1/255 (clamped), else 0..255. Anything else is refused.
    """
    if 0 in data.shape:
        raise ValueError(f"{name} is empty (shape {tuple(data.shape)})")
    if isinstance(data, np.ndarray):
        if data.dtype.kind not in "biuf":
            raise TypeError(f"{name}: numpy dtype {data.dtype} is not numeric")
        if data.dtype.kind == "u" and data.dtype.itemsize == 2:
            return torch.from_numpy(data.astype(np.float32) / 65535)
        data = torch.from_numpy(np.ascontiguousarray(data).astype(data.dtype.newbyteorder("=")))
    if data.dtype == torch.bool:
        return data.float()
    if data.dtype == torch.uint8:
        return data.float() / 255
    if data.dtype == torch.uint16:
        return data.to(torch.int32).float() / 65535
    values = data.float()
    if not torch.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values; fix the producer of {name}")
    low, high = values.min().item(), values.max().item()
    if low < -_UNIT_SLACK:
        raise ValueError(
            f"{name} has negative values (min {low:.4g}); expected [0, 1] or [0, 255]. "
            "An image in [-1, 1] needs (x + 1) / 2 first."
        )
    limit = 1.0 if not data.is_floating_point() else 1 + _UNIT_SLACK
    if high <= limit:
        return values.clamp(0, 1)
    if high <= 255 + _UNIT_SLACK:
        return (values / 255).clamp(0, 1)
    raise ValueError(f"{name} has values up to {high:.4g}; expected [0, 1] or [0, 255]")


def _to_bchw(data: torch.Tensor, name: str, channels_last: bool | None) -> torch.Tensor:
    """(H, W), (H, W, C), (C, H, W), (B, H, W, C) or (B, C, H, W) -> (B, C, H, W)."""
    if data.ndim == 2:
        return data[None, None]
    if data.ndim == 3:
        data = data[None]
    if data.ndim != 4:
        raise ValueError(f"{name} must have 2 to 4 dimensions; got shape {tuple(data.shape)}")
    if channels_last is None:
        last_fits, first_fits = data.shape[-1] in _CHANNELS, data.shape[1] in _CHANNELS
        if not (last_fits or first_fits):
            raise ValueError(f"{name} shape {tuple(data.shape)} has no axis of 1, 3 or 4 channels")
        channels_last = last_fits  # both fit: ComfyUI's (B, H, W, C) wins; pass channels_last
    return data.movedim(-1, 1) if channels_last else data


def image_to_tensor(
    image: ImageInput, name: str = "image", channels_last: bool | None = None
) -> torch.Tensor:
    """Any picture -> (B, 3, H, W) float32 in [0, 1].

    PIL: every mode; alpha (RGBA, LA, PA, transparent P) is dropped, not composited, so the
    colour stored under transparent pixels is what the model sees; L and 1 are replicated to
    RGB; I;16 and I are 16-bit (/ 65535). Arrays and tensors: (H, W), (H, W, C), (C, H, W),
    (B, H, W, C) or (B, C, H, W) with C in 1, 3, 4; where both layouts fit, channels-last wins
    unless `channels_last` says otherwise. Value ranges as in `_to_unit_float`. A list or tuple
    of same-size pictures becomes a batch. NaN or inf raises ValueError naming `name`.
    """
    if isinstance(image, (list, tuple)):
        return _stack(
            [image_to_tensor(p, f"{name}[{i}]", channels_last) for i, p in enumerate(image)], name
        )
    if isinstance(image, Image.Image):
        _check_open(image, name)
        if image.mode in _HIGH_DEPTH_MODES:
            data = _pil_high_depth(image, name)
        else:
            try:
                data = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
            except (ValueError, OSError) as error:
                raise ValueError(f"{name}: PIL mode {image.mode} is not readable ({error})") from None
    elif isinstance(image, (np.ndarray, torch.Tensor)):
        data = image
    else:
        raise TypeError(f"{name} must be a PIL image, numpy array or tensor; got {type(image)}")
    pixels = _to_bchw(_to_unit_float(data, name), name, channels_last)
    if pixels.shape[1] not in _CHANNELS:
        raise ValueError(f"{name} has {pixels.shape[1]} channels; expected 1, 3 or 4")
    rgb = pixels[:, :3] if pixels.shape[1] != 1 else pixels.expand(-1, 3, -1, -1)
    return rgb.contiguous().float()


def _check_open(picture: Image.Image, name: str) -> None:
    """A PIL image whose file was closed before its pixels were read has no pixels to give."""
    closed = ValueError(
        f"{name}: the PIL image was closed before its pixels were read; call .load() or "
        ".copy() inside the `with Image.open(...)` block, or open it again"
    )
    if getattr(picture, "_im", True) is None and getattr(picture, "fp", True) is None:
        raise closed  # lazily opened, never loaded, file closed
    try:
        picture.load()
    except ValueError:  # Pillow: "Operation on closed image"
        raise closed from None
    except OSError as error:
        raise ValueError(f"{name}: the PIL image's file is truncated or damaged ({error})") from None


def _has_transparency(alpha: np.ndarray) -> bool:
    return alpha.dtype.kind in "biu" and alpha.size > 0 and int(alpha.min()) < np.iinfo(alpha.dtype).max


def _pil_mask(mask: Image.Image, name: str) -> np.ndarray:
    """A PIL mask as an (H, W) array, white = edit.

    As the webui reads an uploaded mask: where the mask has transparency (an alpha channel that
    is not opaque everywhere), its alpha is the mask (opaque = edit), whatever the colours: strokes
    painted on a transparent layer mark what they cover. Otherwise its luminance (PIL "L", as
    the reference does).
    """
    _check_open(mask, name)
    if mask.mode in _HIGH_DEPTH_MODES:
        return _pil_high_depth(mask, name)
    has_alpha = mask.mode in _ALPHA_MODES or (mask.mode == "P" and "transparency" in mask.info)
    try:
        if has_alpha:
            alpha = np.asarray(mask.convert("RGBA").getchannel("A"))
            if _has_transparency(alpha):
                return alpha
        return np.asarray(mask.convert("L"))
    except (ValueError, OSError) as error:
        raise ValueError(f"{name}: PIL mode {mask.mode!r} cannot be read as a mask ({error})") from None


def _colour_mask(values: torch.Tensor) -> torch.Tensor:
    """A channels-last colour mask (..., H, W, 3 or 4) -> (..., H, W): the alpha where it has
    transparency, else the luminance (ITU-R 601, PIL's "L")."""
    if values.shape[-1] == 4 and bool((values[..., 3] < 1).any()):
        return values[..., 3]
    red, green, blue = values[..., 0], values[..., 1], values[..., 2]
    return red * 0.299 + green * 0.587 + blue * 0.114


def _is_colour_layout(shape: Sequence[int]) -> bool:
    """(H, W, 3|4) or (B, H, W, 3|4): a colour picture used as a mask (H and W above 4)."""
    return len(shape) in (3, 4) and shape[-1] in (3, 4) and shape[-2] > 4 and shape[-3] > 4


def mask_to_tensor(mask: ImageInput, name: str = "mask") -> torch.Tensor:
    """Any mask -> (B, 1, H, W) float32 in [0, 1], same polarity, NOT binarised.

    PIL: see `_pil_mask`. Arrays and tensors: (H, W), (B, H, W) or (B, 1, H, W), or a colour
    mask (H, W, 3|4) / (B, H, W, 3|4) read as `_pil_mask` reads colour pictures; bool, uint8
    (0..255), uint16 (0..65535), integers (0/1 or 0..255) or floats (0..1, or 0..255 when the
    max exceeds 1 + 1/255, checked to stay within 255). A list or tuple becomes a batch.
    """
    if isinstance(mask, (list, tuple)):
        return _stack([mask_to_tensor(m, f"{name}[{i}]") for i, m in enumerate(mask)], name)
    if isinstance(mask, Image.Image):
        data = _pil_mask(mask, name)
    elif isinstance(mask, (np.ndarray, torch.Tensor)):
        data = mask
    else:
        raise TypeError(f"{name} must be a PIL image, numpy array or tensor; got {type(mask)}")
    values = _to_unit_float(data, name)
    if _is_colour_layout(values.shape):
        values = _colour_mask(values)
    if values.ndim == 2:
        values = values[None, None]
    elif values.ndim == 3:
        values = values[:, None]
    if values.ndim != 4 or values.shape[1] != 1:
        raise ValueError(
            f"{name} must be (H, W), (B, H, W) or (B, 1, H, W); got shape {tuple(data.shape)}. "
            "Convert a colour mask to one channel first."
        )
    return values.contiguous()


def _stack(batch: list[torch.Tensor], name: str) -> torch.Tensor:
    if not batch:
        raise ValueError(f"{name} is an empty list")
    if len({tuple(t.shape[1:]) for t in batch}) > 1:
        raise ValueError(f"{name}: the pictures in the list differ in size; make them one size")
    return torch.cat(batch)


def broadcast_batch(
    *tensors: torch.Tensor, names: Sequence[str] | None = None
) -> tuple[torch.Tensor, ...]:
    """Expand batch sizes 1 and N to N (views: clone before writing in place)."""
    names = list(names) if names is not None else [f"tensor {i}" for i in range(len(tensors))]
    sizes = [t.shape[0] for t in tensors]
    target = max(sizes, default=1)
    if any(size not in (1, target) for size in sizes) or min(sizes, default=1) == 0:
        listing = ", ".join(f"{n} has {s}" for n, s in zip(names, sizes, strict=True))
        raise ValueError(f"batch sizes do not match ({listing}); give each 1 or the same N")
    return tuple(t.expand(target, *t.shape[1:]) for t in tensors)


def fit_mask_to_image(
    mask: torch.Tensor, image_hw: Sequence[int], name: str = "mask"
) -> torch.Tensor:
    """Resize a mask to the image it belongs to.

    Policy: equal sizes pass unchanged; the same aspect ratio (within 1%) at another size is
    resized with nearest-exact (no soft edges invented) and warns naming both sizes; a different
    aspect ratio raises ValueError, since stretching a mask moves what it marks.
    """
    (mask_h, mask_w), (image_h, image_w) = mask.shape[-2:], tuple(image_hw)
    if (mask_h, mask_w) == (image_h, image_w):
        return mask
    sizes = f"{name} is {mask_w}x{mask_h} but the image is {image_w}x{image_h}"
    if abs((mask_w / mask_h) / (image_w / image_h) - 1) > 0.01:
        raise ValueError(f"{sizes}: aspect ratios differ by over 1%; crop the mask to the image")
    warnings.warn(f"{sizes}; resizing {name} to the image (nearest)", stacklevel=2)
    return F.interpolate(mask, size=(image_h, image_w), mode="nearest-exact")


def binary_edit_mask(edit_mask: torch.Tensor) -> torch.Tensor:
    """The user's edit mask (1 = edit) decided pixel by pixel: 1 where edited, 0 where kept.

    The threshold of `edit_to_keep_mask` (above 0.5 is edited), applied at the source's size so
    that faint noise in a mask (a few levels of 255) neither widens the crop nor lets the stitch
    blend into pixels the model keeps: those stay the input's own.
    """
    if edit_mask.ndim != 4 or edit_mask.shape[1] != 1:
        raise ValueError(f"edit_mask must be (B, 1, H, W); got {tuple(edit_mask.shape)}")
    return (edit_mask > 0.5).to(edit_mask.dtype)


def edit_to_keep_mask(edit_mask: torch.Tensor) -> torch.Tensor:
    """The user's edit mask (1 = edit) -> the model's binary KEEP mask (1 = keep).

    THE one place that flips polarity. As the reference: keep = (1 - edit) >= 0.5, so an edit
    value of exactly 0.5 is kept, anything above 0.5 is edited (`binary_edit_mask`'s threshold).
    """
    return 1 - binary_edit_mask(edit_mask)


def to_model_range(image01: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels -> the VAE's [-1, 1]."""
    return image01 * 2 - 1


def masked_image(image_m1p1: torch.Tensor, keep_mask: torch.Tensor) -> torch.Tensor:
    """The source in [-1, 1] with the edit region set to 0 (grey): image * keep."""
    if image_m1p1.shape[-2:] != keep_mask.shape[-2:]:
        sizes = f"{tuple(image_m1p1.shape[-2:])} and {tuple(keep_mask.shape[-2:])}"
        raise ValueError(f"image and keep_mask differ in size: {sizes}")
    image_m1p1, keep_mask = broadcast_batch(image_m1p1, keep_mask, names=("image", "keep_mask"))
    return image_m1p1 * keep_mask


def latent_keep_mask(
    keep_mask: torch.Tensor,
    latent_hw: Sequence[int],
    mode: Literal["bilinear", "nearest"] = "bilinear",
) -> torch.Tensor:
    """The keep-mask at latent size, the UNet's 9th input channel.

    "bilinear" (align_corners False, no antialias, not re-binarised) is what training and the
    reference script use; "nearest" is what diffusers' PaintByExamplePipeline does
    (`F.interpolate(mask, size=...)` with its default mode), for matching diffusers' outputs.
    """
    size = tuple(int(s) for s in latent_hw)
    if mode == "bilinear":
        return F.interpolate(
            keep_mask, size=size, mode="bilinear", align_corners=False, antialias=False
        )
    if mode == "nearest":
        return F.interpolate(keep_mask, size=size, mode="nearest")
    raise ValueError(f"mode must be 'bilinear' or 'nearest'; got {mode!r}")


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> 8-bit RGB PIL image (round to nearest)."""
    array = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def _fit_exemplar(picture: Image.Image, size: int, mode: ExemplarMode) -> Image.Image:
    if mode == "pad":  # centre on a grey square, then squash (now a plain resize)
        side = max(picture.size)
        canvas = Image.new("RGB", (side, side), (round(EXEMPLAR_GREY * 255),) * 3)
        canvas.paste(picture, ((side - picture.width) // 2, (side - picture.height) // 2))
        picture = canvas
    if mode in ("squash", "pad"):
        return picture.resize((size, size), Image.Resampling.BICUBIC)
    # "crop": shortest edge to `size` (long edge truncated as transformers does), centre crop
    short, long = sorted(picture.size)
    scaled_long = int(size * long / short)
    new_size = (size, scaled_long) if picture.width == short else (scaled_long, size)
    picture = picture.resize(new_size, Image.Resampling.BICUBIC)
    left, top = (picture.width - size) // 2, (picture.height - size) // 2
    return picture.crop((left, top, left + size, top + size))


def exemplar_alpha(exemplar: ImageInput) -> torch.Tensor | None:
    """An exemplar's own alpha as its object mask, (B, 1, H, W) with 1 = opaque = the object;
    None when it has no transparency (no alpha channel, or opaque everywhere)."""
    if isinstance(exemplar, (list, tuple)):
        alphas = [exemplar_alpha(picture) for picture in exemplar]
        if all(alpha is None for alpha in alphas):
            return None
        sizes = [image_to_tensor(picture, "exemplar").shape[-2:] for picture in exemplar]
        return torch.cat([
            alpha if alpha is not None else torch.ones(1, 1, *size)
            for alpha, size in zip(alphas, sizes, strict=True)
        ])
    if isinstance(exemplar, Image.Image):
        if not (exemplar.mode in _ALPHA_MODES or (exemplar.mode == "P" and "transparency" in exemplar.info)):
            return None
        _check_open(exemplar, "exemplar")
        alpha = np.asarray(exemplar.convert("RGBA").getchannel("A"))
        return torch.from_numpy(alpha.astype(np.float32) / 255)[None, None] if _has_transparency(alpha) else None
    if isinstance(exemplar, (np.ndarray, torch.Tensor)) and exemplar.ndim >= 3:
        pixels = _to_bchw(_to_unit_float(exemplar, "exemplar"), "exemplar", None)
        if pixels.shape[1] == 4 and bool((pixels[:, 3] < 1).any()):
            return pixels[:, 3:4].contiguous()
    return None


def prepare_exemplar(
    exemplar: ImageInput,
    size: int = 224,
    mode: ExemplarMode = "squash",
    exemplar_mask: ImageInput | None = None,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> torch.Tensor:
    """Exemplar picture(s) -> (B, 3, size, size) CLIP-normalised pixels.

    Works on 8-bit RGB PIL images as the reference does (float input is rounded to 8 bits).
    mode "squash": PIL bicubic resize to size x size ignoring the aspect ratio (the reference and
    training); "crop": shortest edge to `size`, centre crop (diffusers' CLIPImageProcessor);
    "pad": pad to a square with grey, then resize. `exemplar_mask` (white = object, resized to the
    exemplar by `fit_mask_to_image`): the background is blended to grey through the soft mask and
    the picture cropped to the box of mask > 0.5 before the mode applies, so the model sees the
    object, not its surroundings. Without `exemplar_mask`, an exemplar with transparency (a
    cut-out PNG, a 4-channel array) uses its alpha as that mask (`exemplar_alpha`).
    """
    from .regions import mask_bbox  # regions imports this module, so import at call time

    if mode not in ("squash", "crop", "pad"):
        raise ValueError(f"mode must be 'squash', 'crop' or 'pad'; got {mode!r}")
    if size < 1:
        raise ValueError(f"size must be positive; got {size}")
    if not all(math.isfinite(s) and s > 0 for s in std):
        raise ValueError(f"std must be positive; got {tuple(std)}")
    pixels = image_to_tensor(exemplar, "exemplar")
    masks, mask_name = None, "exemplar_mask"
    if exemplar_mask is None:
        exemplar_mask, mask_name = exemplar_alpha(exemplar), "the exemplar's alpha"
    if exemplar_mask is not None:
        masks = fit_mask_to_image(
            mask_to_tensor(exemplar_mask, "exemplar_mask"), pixels.shape[-2:], "exemplar_mask"
        )
        pixels, masks = broadcast_batch(pixels, masks, names=("exemplar", "exemplar_mask"))
    fitted = []
    for index, picture in enumerate(pixels):
        if masks is not None:
            box = mask_bbox(masks[index : index + 1], threshold=0.5)
            if box is None:
                raise ValueError(
                    f"{mask_name} (exemplar {index}) marks nothing (no value above 0.5): the "
                    "object would be empty; mark the object white (or opaque)"
                )
            x0, y0, x1, y1 = box
            picture = picture * masks[index] + EXEMPLAR_GREY * (1 - masks[index])
            picture = picture[:, y0:y1, x0:x1]
        fitted.append(np.asarray(_fit_exemplar(to_pil(picture), size, mode)))
    batch = torch.from_numpy(np.stack(fitted)).permute(0, 3, 1, 2).float() / 255
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (batch - mean_t) / std_t
