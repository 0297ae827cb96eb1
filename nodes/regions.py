"""Crop around the mask, stitch back, and mask geometry: pbe_core.regions as nodes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from comfy_api.v0_0_2 import io, ui

from ..pbe_core import prepare, regions
from .messages import noted_warnings, plain_errors, with_warnings
from .model import CATEGORY
from .tensors import (
    draw_region,
    edit_mask_to_mask,
    image_to_pixels,
    mask_to_edit_mask,
    pixels_to_image,
    require_edit,
)

KERNELS = ("round", "square")


@dataclass(frozen=True)
class Stitch:
    """What 'Paint by Example Stitch' needs to put an edited crop back."""

    region: regions.Region
    original: torch.Tensor  # (B, 3, H, W)
    edit_mask: torch.Tensor  # (B, 1, H, W)
    grow: int
    feather: int


@io.comfytype(io_type="PBE_STITCH")
class StitchData(io.ComfyTypeIO):
    Type = Stitch


def crop_options() -> list:
    """The crop and stitch inputs, shared with the all-in-one node."""
    return [
        io.Float.Input(
            "context",
            default=1.5,
            min=1.0,
            max=8.0,
            step=0.05,
            tooltip="The crop is the mask's box scaled by this factor: more context helps the "
            "model place the object at the right scale.",
        ),
        io.Int.Input(
            "resolution",
            default=512,
            min=64,
            max=2048,
            step=8,
            tooltip="Longer side of the crop as the model sees it (the model was trained at 512).",
        ),
        io.Int.Input(
            "grow",
            default=0,
            min=-256,
            max=256,
            tooltip="Grow (or with a negative value shrink) the mask by this many pixels when "
            "blending the edit back.",
        ),
        io.Int.Input(
            "feather",
            default=8,
            min=0,
            max=256,
            tooltip="Soft edge, in pixels, of the blend back; pixels further from the mask stay "
            "exactly as they were.",
        ),
    ]


# The crop options added after the first release: optional and last, so workflows saved before
# them keep their widgets; these defaults are the behaviour before them.
CROP_EXTRAS = {
    "fill_holes": False,
    "mask_hipass": 0.0,
    "multiple": 8,
    "min_size": 128,
    "max_aspect": 2.0,
    "context_mask": None,
}


def crop_extras() -> list:
    """The optional crop options (pbe_core.regions), shared with the all-in-one node."""
    return [
        io.Boolean.Input(
            "fill_holes",
            default=False,
            optional=True,
            tooltip="Fill what the mask encloses, so islands of the scene left inside a painted "
            "region are repainted too.",
        ),
        io.Float.Input(
            "mask_hipass",
            default=0.0,
            min=0.0,
            max=1.0,
            step=0.01,
            optional=True,
            tooltip="Mask values below this count as 0: a faint haze from a soft brush or a "
            "segmenter no longer widens the crop or ghosts the blend.",
        ),
        io.Int.Input(
            "multiple",
            default=8,
            min=8,
            max=64,
            step=8,
            optional=True,
            tooltip="The crop's sides at working size are multiples of this (64: latents "
            "divisible by 8, for model patches that need it).",
        ),
        io.Int.Input(
            "min_size",
            default=128,
            min=8,
            max=2048,
            optional=True,
            tooltip="Smallest side of the crop in the picture's pixels, so a tiny mask still "
            "gets surroundings.",
        ),
        io.Float.Input(
            "max_aspect",
            default=2.0,
            min=1.0,
            max=4.0,
            step=0.05,
            optional=True,
            tooltip="Most elongated crop allowed; 1 gives square crops, as the model was trained.",
        ),
        io.Mask.Input(
            "context_mask",
            optional=True,
            tooltip="White = more the model should see (e.g. the table under a cup): the crop "
            "takes in this mask's box too.",
        ),
    ]


def plan_crop(pixels, edit_mask, context, resolution, grow, feather, extras: dict):
    """The edit mask as the crop options leave it, and the crop planned around it (in the
    order pbe_core.conductor applies them)."""
    edit_mask = regions.hipass_mask(edit_mask, extras["mask_hipass"])
    if extras["fill_holes"]:
        edit_mask = regions.fill_holes(edit_mask)
    context_mask = extras["context_mask"]
    if context_mask is not None:
        context_mask = prepare.mask_to_tensor(context_mask, "context_mask")
        context_mask = prepare.fit_mask_to_image(context_mask, pixels.shape[-2:], "context_mask")
        context_mask = regions.hipass_mask(context_mask, extras["mask_hipass"])
    require_edit(edit_mask, "mask (after mask_hipass)")
    plan = regions.plan_region(
        pixels.shape[-2:],
        edit_mask,
        context,
        resolution,
        extras["multiple"],
        extras["min_size"],
        margin=max(grow, 0) + feather,
        max_aspect=extras["max_aspect"],
        context_mask=context_mask,
    )
    return edit_mask, plan


def preview(pixels: torch.Tensor) -> dict:
    return ui.PreviewImage(pixels_to_image(pixels)).as_dict()


class PaintByExampleCrop(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PaintByExampleCrop",
            display_name="Paint by Example Crop",
            category=CATEGORY,
            description="Crops the region around the mask and resizes it to the model's working "
            "size, so a small edit in a large photo runs at the resolution the model was trained "
            "at. Feed the stitch output and the edited crop to 'Paint by Example Stitch'. The "
            "preview shows the crop box on the picture.",
            inputs=[
                io.Image.Input("image", tooltip="The full picture to edit."),
                io.Mask.Input("mask", tooltip="White = the region to edit."),
                *crop_options(),
                *crop_extras(),
            ],
            outputs=[
                io.Image.Output(
                    "image_out",
                    display_name="image",
                    tooltip="The crop at working size (sides multiples of 8).",
                ),
                io.Mask.Output(
                    "mask_out", display_name="mask", tooltip="The mask cropped the same way."
                ),
                StitchData.Output(
                    "stitch",
                    display_name="stitch",
                    tooltip="Where the crop came from, for 'Paint by Example Stitch'.",
                ),
            ],
        )

    @classmethod
    @plain_errors
    def execute(cls, image, mask, context, resolution, grow, feather, **extras) -> io.NodeOutput:
        with noted_warnings() as notes:
            pixels = image_to_pixels(image)
            edit_mask = mask_to_edit_mask(mask, pixels)
            edit_mask, region = plan_crop(
                pixels, edit_mask, context, resolution, grow, feather, CROP_EXTRAS | extras
            )
            crop_pixels, crop_mask = regions.crop(pixels, edit_mask, region)
        stitch = Stitch(region, pixels, edit_mask, grow, feather)
        return io.NodeOutput(
            pixels_to_image(crop_pixels),
            edit_mask_to_mask(crop_mask),
            stitch,
            ui=with_warnings(preview(draw_region(pixels, edit_mask, region.box)), notes),
        )


class PaintByExampleStitch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PaintByExampleStitch",
            display_name="Paint by Example Stitch",
            category=CATEGORY,
            description="Puts the edited crop back into the full picture, blended through the "
            "grown and feathered mask; every pixel beyond that is the original's, bit for bit.",
            inputs=[
                StitchData.Input("stitch", tooltip="From 'Paint by Example Crop'."),
                io.Image.Input(
                    "image",
                    tooltip="The edited crop (e.g. VAE Decode's output), at crop size.",
                ),
            ],
            outputs=[
                io.Image.Output(
                    "image_out", display_name="image", tooltip="The full picture with the edit."
                ),
            ],
        )

    @classmethod
    @plain_errors
    def execute(cls, stitch: Stitch, image) -> io.NodeOutput:
        edited = image_to_pixels(image, "image (edited crop)")
        result = regions.stitch(
            stitch.original, edited, stitch.edit_mask, stitch.region, stitch.grow, stitch.feather
        )
        return io.NodeOutput(pixels_to_image(result))


class PaintByExampleGrowMask(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PaintByExampleGrowMask",
            display_name="Paint by Example Grow Mask",
            category=CATEGORY,
            description="Grows or shrinks a mask by exact pixel distances, then feathers its edge.",
            inputs=[
                io.Mask.Input("mask", tooltip="The mask to change."),
                io.Int.Input(
                    "grow",
                    default=8,
                    min=-512,
                    max=512,
                    tooltip="Pixels to grow by (negative: shrink).",
                ),
                io.Int.Input(
                    "feather",
                    default=0,
                    min=0,
                    max=512,
                    tooltip="Width of the soft edge added outside the mask, in pixels.",
                ),
                io.Combo.Input(
                    "kernel",
                    options=list(KERNELS),
                    tooltip="round grows equally in every direction; square keeps corners.",
                ),
            ],
            outputs=[
                io.Mask.Output(
                    "mask_out", display_name="mask", tooltip="The grown and feathered mask."
                ),
            ],
        )

    @classmethod
    @plain_errors
    def execute(cls, mask, grow, feather, kernel) -> io.NodeOutput:
        edit_mask = regions.grow_mask(prepare.mask_to_tensor(mask, "mask"), grow, kernel)
        return io.NodeOutput(edit_mask_to_mask(regions.feather_mask(edit_mask, feather)))


class PaintByExampleMaskToBBox(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PaintByExampleMaskToBBox",
            display_name="Paint by Example Mask to BBox",
            category=CATEGORY,
            description="Replaces each mask by its filled bounding box (the shape the model was "
            "trained on).",
            inputs=[
                io.Mask.Input("mask", tooltip="The mask whose box to take."),
                io.Float.Input(
                    "threshold",
                    default=0.5,
                    min=0.0,
                    max=0.99,
                    step=0.01,
                    tooltip="Mask values above this count as inside.",
                ),
            ],
            outputs=[
                io.Mask.Output(
                    "mask_out", display_name="mask", tooltip="Each mask's bounding box, filled."
                ),
            ],
        )

    @classmethod
    @plain_errors
    def execute(cls, mask, threshold) -> io.NodeOutput:
        box_mask = regions.mask_to_bbox_mask(prepare.mask_to_tensor(mask, "mask"), threshold)
        return io.NodeOutput(edit_mask_to_mask(box_mask))
