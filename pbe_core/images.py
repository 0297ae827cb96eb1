"""Image files in and out: upright as viewers show them, and written back without losing the
input's alpha, colour profile or 16-bit depth where the format can hold them.

`open_image` applies the EXIF orientation (as every viewer does, so a mask drawn on the picture
as shown fits it) and refuses decompression bombs with a message. `save_image` writes PNG and
lossless WebP (the pixels outside the mask stay the input's own, bit for bit) or JPEG at
quality 95 with a warning that JPEG cannot keep them; it writes atomically (`files.atomic_write`).
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .files import atomic_write

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
JPEG_QUALITY = 95


class ImageFileError(ValueError):
    """An image file that cannot be read or written; the message names it and the fix."""


def open_image(path: str | os.PathLike, name: str = "image") -> Image.Image:
    """Read an image file fully, turned upright by its EXIF orientation; the file is closed."""
    path = Path(path).expanduser()
    try:
        with Image.open(path) as picture:
            picture.load()
            upright = ImageOps.exif_transpose(picture)
    except FileNotFoundError:
        raise ImageFileError(f"{name}: no such file: {path}") from None
    except IsADirectoryError:
        raise ImageFileError(f"{name}: {path} is a folder; give an image file") from None
    except PermissionError:
        raise ImageFileError(f"{name}: {path} is not readable (permission denied)") from None
    except Image.DecompressionBombError as error:
        raise ImageFileError(
            f"{name}: {path} is too large to open safely ({error}). Downscale or crop it "
            "first; a picture this large is not edited at its full size anyway"
        ) from None
    except UnidentifiedImageError:
        raise ImageFileError(
            f"{name}: {path} is not an image this can read (PNG, JPEG, WebP, TIFF, BMP, ...)"
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageFileError(
            f"{name}: {path} is truncated or damaged ({error}); export or download it again"
        ) from None
    return upright


def has_alpha(picture: Image.Image) -> bool:
    return picture.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (
        picture.mode == "P" and "transparency" in picture.info
    )


def output_format(path: str | os.PathLike, name: str = "out") -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ImageFileError(
            f"{name}: {Path(path).name} needs an image extension: .png or .webp (lossless), or .jpg"
        )
    return FORMATS[suffix]


def save_image(
    pixels: torch.Tensor, path: str | os.PathLike, source: Image.Image | None = None, name: str = "out"
) -> Path:
    """(3, H, W) pixels in [0, 1] -> an image file, atomically, carrying `source`'s properties.

    From `source` (the input picture, as `open_image` gave it): its alpha channel (PNG, WebP),
    its ICC profile, and its 16-bit depth (PNG: a 16-bit RGB file). Warns (UserWarning) for
    what the format cannot keep: JPEG changes pixels and drops alpha; WebP and JPEG are 8-bit.
    """
    path = Path(path)
    kind = output_format(path, name)
    icc = source.info.get("icc_profile") if source is not None else None
    alpha = None
    if source is not None and has_alpha(source) and source.size == tuple(pixels.shape[:0:-1]):
        alpha = source.convert("RGBA").getchannel("A")
    deep = source is not None and source.mode in HIGH_DEPTH_MODES
    if kind == "JPEG":
        warnings.warn(
            f"{name}: JPEG cannot keep pixels bit for bit, so even pixels outside the mask change "
            f"slightly (quality {JPEG_QUALITY}); write .png or .webp for an exact copy", stacklevel=2
        )
        if alpha is not None:
            warnings.warn(f"{name}: JPEG has no transparency: the input's alpha is dropped", stacklevel=2)
            alpha = None
    if deep and kind == "PNG":
        values = (pixels.clamp(0, 1) * 65535).round().to(torch.int32).permute(1, 2, 0).numpy()
        return atomic_write(path, lambda tmp: _write_png16(values.astype(np.uint16), tmp, icc), path.suffix)
    if deep:
        warnings.warn(f"{name}: {kind} holds 8 bits per channel: the input's 16-bit depth is reduced; "
                      "write .png to keep it", stacklevel=2)
    array = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(np.ascontiguousarray(array), mode="RGB")
    if alpha is not None:
        picture.putalpha(alpha)
    options: dict = {"icc_profile": icc} if icc else {}
    if kind == "JPEG":
        options.update(quality=JPEG_QUALITY, subsampling=0)
    elif kind == "WEBP":
        options.update(lossless=True, exact=True, quality=100)
    return atomic_write(path, lambda tmp: picture.save(tmp, format=kind, **options), path.suffix)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _write_png16(rgb: np.ndarray, path: str, icc: bytes | None) -> None:
    """A 16-bit RGB PNG (PIL has no 16-bit colour mode to write one with)."""
    height, width, _ = rgb.shape
    rows = np.zeros((height, 1 + width * 6), np.uint8)  # filter byte 0 ("none") per row
    rows[:, 1:] = np.ascontiguousarray(rgb, dtype=">u2").view(np.uint8).reshape(height, width * 6)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    chunks = [_png_chunk(b"IHDR", header)]
    if icc:
        chunks.append(_png_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc)))
    chunks += [_png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)), _png_chunk(b"IEND", b"")]
    with open(path, "wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n" + b"".join(chunks))
