"""The tab's and the script's values, checked and turned into `PaintByExample.edit` options.

- image: `init_images[0]`, flattened onto the img2img background colour as the webui does;
  mask: `image_mask` binarised as the webui does (alpha > 128 for a mask with transparency,
  else grey >= 128; white = edit), inverted for "Inpaint not masked".
- "Only masked": region "auto" on the full-size image. The crop box is the mask's box scaled by
  "Crop context" and grown by the "Only masked padding" on each side: context = crop context
  + 2 * padding / (longer side of the mask's box). Working size: longer side max(width, height).
- "Whole picture": image and mask resized to width x height by the tab's resize mode (the webui's
  `images.resize_image`; "latent upscale" resizes as "Just resize"), region "full".
- Mask blur b -> feather int(2.5 * b + 0.5), the reach of the webui's own Gaussian mask blur.
"""

from __future__ import annotations

import base64
import binascii
import io

from modules import images
from modules.shared import opts
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import PaintByExampleError

# UI name -> (pbe_core sampler, the webui's own sampler name and schedule type, for the infotext)
SAMPLERS = {
    "PLMS": ("plms", "PLMS", None),
    "DDIM": ("ddim", "DDIM", None),
    "Euler": ("euler", "Euler", None),
    "Euler a": ("euler_a", "Euler a", None),
    "DPM++ 2M Karras": ("dpmpp_2m", "DPM++ 2M", "Karras"),
}
EXEMPLAR_MODES = ("squash", "crop", "pad")
CROP_CONTEXT_RANGE = (1.0, 4.0)  # the mask box scaled by 1x to 4x
MAX_CANDIDATES = 16  # "best of N"
LORA_STRENGTH_RANGE = (-2.0, 2.0)
LATENT_UPSCALE = 3  # the webui's resize mode "Just resize (latent upscale)"


def read_picture(value, name: str) -> Image.Image | None:
    """A PIL image from the UI, or base64 text (optionally a data: URI) from the API."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, Image.Image):
        return value
    if not isinstance(value, str):
        raise PaintByExampleError(
            f"{name}: expected an image or base64 text, got {type(value).__name__}."
        )
    text = "".join(value.split())
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise not_an_image(name, "the text is not valid base64") from None
    try:
        picture = Image.open(io.BytesIO(data))
        picture.load()
    except (UnidentifiedImageError, OSError, ValueError):  # PIL's own text names its buffer
        raise not_an_image(name, "its bytes are no image file") from None
    return ImageOps.exif_transpose(picture)


def not_an_image(name: str, why: str) -> PaintByExampleError:
    return PaintByExampleError(
        f"{name}: not a base64-encoded image ({why}). Send the PNG or JPEG file's bytes in "
        f"base64, optionally as a data:image/png;base64,... URI."
    )


def split_alpha(picture: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """The exemplar in RGB, and its alpha as the object mask when it has transparency."""
    if picture.mode in ("RGBA", "LA") or "transparency" in picture.info:
        rgba = picture.convert("RGBA")
        alpha = rgba.getchannel("A")
        if alpha.getextrema()[0] < 255:
            return rgba.convert("RGB"), alpha
    return picture.convert("RGB"), None


def binary_edit_mask(mask: Image.Image, invert: bool) -> Image.Image:
    """The webui's binarisation: alpha > 128 where the mask has transparency, else grey >= 128
    (its latent mask rounds at one half). White = edit; `invert` for "Inpaint not masked"."""
    if mask.mode == "RGBA" and mask.getextrema()[-1] != (255, 255):
        binary = mask.getchannel("A").point(lambda value: 255 if value > 128 else 0)
    else:
        binary = mask.convert("L").point(lambda value: 255 if value >= 128 else 0)
    return ImageOps.invert(binary) if invert else binary


def number(value, name: str, low: float, high: float) -> float:
    try:
        result = float(value)
    except (TypeError, ValueError):
        result = float("nan")
    if not low <= result <= high:
        raise PaintByExampleError(f"{name} must be a number from {low} to {high}; got {value!r}.")
    return result


def choice(value, name: str, options) -> str:
    for option in options:
        if str(value).strip().lower() == option.lower():
            return option
    raise PaintByExampleError(f"{name} {value!r} is not one of: {', '.join(options)}.")


def source_and_mask(p) -> tuple[Image.Image, Image.Image]:
    """The image and binary edit mask the edit works on, at the size the tab's area mode needs."""
    if not p.init_images:
        raise PaintByExampleError("No image: upload the picture to edit in the Inpaint tab.")
    if len(p.init_images) > 1:
        raise PaintByExampleError(
            f"Paint by Example edits one image at a time; got {len(p.init_images)} init images "
            f"(use the Batch tab for many)."
        )
    if p.image_mask is None:
        raise PaintByExampleError(
            "No mask: paint over the region to replace in the Inpaint tab (over the API, send "
            "`mask` with white where the exemplar's object goes)."
        )
    image = images.flatten(p.init_images[0], opts.img2img_background_color)
    mask = binary_edit_mask(p.image_mask, bool(p.inpainting_mask_invert))
    if mask.getbbox() is None:
        inverted = (
            " (with 'Inpaint not masked' the painted area is kept)"
            if p.inpainting_mask_invert
            else ""
        )
        raise PaintByExampleError(f"The mask is empty: paint over the region to replace{inverted}.")
    if not p.inpaint_full_res:
        mode = 0 if p.resize_mode == LATENT_UPSCALE else p.resize_mode
        image = images.resize_image(mode, image, p.width, p.height)
        mask = images.resize_image(mode, mask, p.width, p.height)
    return image, mask


def area_options(p, mask: Image.Image, crop_context: float) -> dict:
    """The tab's area settings as `edit` options (see the module docstring)."""
    blur = max(p.mask_blur_x, p.mask_blur_y)
    options = {"feather": int(2.5 * blur + 0.5) if blur > 0 else 0}
    if not p.inpaint_full_res:
        return options | {"region": "full"}
    x0, y0, x1, y1 = mask.getbbox()
    padding = max(int(p.inpaint_full_res_padding), 0)
    return options | {
        "region": "auto",
        "context": crop_context + 2 * padding / max(x1 - x0, y1 - y0),
        "resolution": max(p.width, p.height),
    }
