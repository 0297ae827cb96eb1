"""Crop around the mask, stitch back, and mask geometry: pbe_core.regions as nodes."""

from __future__ import annotations

from dataclasses import dataclass

import nodes as comfy_nodes  # ComfyUI's own nodes.py
import torch

from ..pbe_core import prepare, regions
from .model import CATEGORY
from .tensors import (
    draw_region,
    edit_mask_to_mask,
    image_to_pixels,
    mask_to_edit_mask,
    pixels_to_image,
    require_edit,
)

STITCH_TYPE = "PBE_STITCH"
KERNELS = ("round", "square")


@dataclass(frozen=True)
class Stitch:
    """What 'Paint by Example Stitch' needs to put an edited crop back."""

    region: regions.Region
    original: torch.Tensor  # (B, 3, H, W)
    edit_mask: torch.Tensor  # (B, 1, H, W)
    grow: int
    feather: int


def crop_options() -> dict:
    """The crop and stitch inputs, shared with the all-in-one node."""
    return {
        "context": (
            "FLOAT",
            {
                "default": 1.5,
                "min": 1.0,
                "max": 8.0,
                "step": 0.05,
                "tooltip": "The crop is the mask's box scaled by this factor: more context "
                "helps the model place the object at the right scale.",
            },
        ),
        "resolution": (
            "INT",
            {
                "default": 512,
                "min": 64,
                "max": 2048,
                "step": 8,
                "tooltip": "Longer side of the crop as the model sees it (the model was "
                "trained at 512).",
            },
        ),
        "grow": (
            "INT",
            {
                "default": 0,
                "min": -256,
                "max": 256,
                "tooltip": "Grow (or with a negative value shrink) the mask by this many "
                "pixels when blending the edit back.",
            },
        ),
        "feather": (
            "INT",
            {
                "default": 8,
                "min": 0,
                "max": 256,
                "tooltip": "Soft edge, in pixels, of the blend back; pixels further from the "
                "mask stay exactly as they were.",
            },
        ),
    }


def plan_crop(pixels, edit_mask, context: float, resolution: int, grow: int, feather: int):
    return regions.plan_region(
        pixels.shape[-2:], edit_mask, context, resolution, margin=max(grow, 0) + feather
    )


class PaintByExampleCrop:
    DESCRIPTION = (
        "Crops the region around the mask and resizes it to the model's working size, so a "
        "small edit in a large photo runs at the resolution the model was trained at. Feed the "
        "stitch output and the edited crop to 'Paint by Example Stitch'."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK", STITCH_TYPE)
    RETURN_NAMES = ("image", "mask", "stitch")
    OUTPUT_TOOLTIPS = (
        "The crop at working size (sides multiples of 8).",
        "The mask cropped the same way.",
        "Where the crop came from, for 'Paint by Example Stitch'.",
    )
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The full picture to edit."}),
                "mask": ("MASK", {"tooltip": "White = the region to edit."}),
                **crop_options(),
            }
        }

    def crop(self, image, mask, context, resolution, grow, feather):
        pixels = image_to_pixels(image)
        edit_mask = mask_to_edit_mask(mask, pixels)
        require_edit(edit_mask)
        region = plan_crop(pixels, edit_mask, context, resolution, grow, feather)
        crop_pixels, crop_mask = regions.crop(pixels, edit_mask, region)
        stitch = Stitch(region, pixels, edit_mask, grow, feather)
        preview = draw_region(pixels, edit_mask, region.box)
        ui = comfy_nodes.PreviewImage().save_images(pixels_to_image(preview), "pbe_crop")["ui"]
        result = (pixels_to_image(crop_pixels), edit_mask_to_mask(crop_mask), stitch)
        return {"ui": ui, "result": result}


class PaintByExampleStitch:
    DESCRIPTION = (
        "Puts the edited crop back into the full picture, blended through the grown and "
        "feathered mask; every pixel beyond that is the original's, bit for bit."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The full picture with the edit.",)
    FUNCTION = "stitch"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "stitch": (STITCH_TYPE, {"tooltip": "From 'Paint by Example Crop'."}),
                "image": (
                    "IMAGE",
                    {"tooltip": "The edited crop (e.g. VAE Decode's output), at crop size."},
                ),
            }
        }

    def stitch(self, stitch: Stitch, image):
        edited = image_to_pixels(image, "image (edited crop)")
        result = regions.stitch(
            stitch.original, edited, stitch.edit_mask, stitch.region, stitch.grow, stitch.feather
        )
        return (pixels_to_image(result),)


class PaintByExampleGrowMask:
    DESCRIPTION = "Grows or shrinks a mask by exact pixel distances, then feathers its edge."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("mask",)
    OUTPUT_TOOLTIPS = ("The grown and feathered mask.",)
    FUNCTION = "grow"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "mask": ("MASK", {"tooltip": "The mask to change."}),
                "grow": (
                    "INT",
                    {
                        "default": 8,
                        "min": -512,
                        "max": 512,
                        "tooltip": "Pixels to grow by (negative: shrink).",
                    },
                ),
                "feather": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 512,
                        "tooltip": "Width of the soft edge added outside the mask, in pixels.",
                    },
                ),
                "kernel": (
                    KERNELS,
                    {"tooltip": "round grows equally in every direction; square keeps corners."},
                ),
            }
        }

    def grow(self, mask, grow, feather, kernel):
        edit_mask = regions.grow_mask(prepare.mask_to_tensor(mask, "mask"), grow, kernel)
        return (edit_mask_to_mask(regions.feather_mask(edit_mask, feather)),)


class PaintByExampleMaskToBBox:
    DESCRIPTION = (
        "Replaces each mask by its filled bounding box (the shape the model was trained on)."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("mask",)
    OUTPUT_TOOLTIPS = ("Each mask's bounding box, filled.",)
    FUNCTION = "bbox"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "mask": ("MASK", {"tooltip": "The mask whose box to take."}),
                "threshold": (
                    "FLOAT",
                    {
                        "default": 0.5,
                        "min": 0.0,
                        "max": 0.99,
                        "step": 0.01,
                        "tooltip": "Mask values above this count as inside.",
                    },
                ),
            }
        }

    def bbox(self, mask, threshold):
        return (
            edit_mask_to_mask(
                regions.mask_to_bbox_mask(prepare.mask_to_tensor(mask, "mask"), threshold)
            ),
        )
