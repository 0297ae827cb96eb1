"""The all-in-one edit: pbe_core's one conductor of the edit on ComfyUI's KSampler and VAE."""

from __future__ import annotations

import comfy.samplers
from comfy_api.v0_0_2 import io

from ..pbe_core.conductor import conduct_edit
from .exemplar import (
    EXEMPLAR_MODE_TOOLTIP,
    EXEMPLAR_MODES,
    MASK_MARKS,
    exemplar_object_mask,
    exemplar_seen,
    mask_marks_input,
    seen_preview,
)
from .messages import noted_warnings, plain_errors, with_warnings
from .model import CATEGORY, Encoder, require_paint_by_example
from .parts import ComfyEditParts
from .regions import CROP_EXTRAS, crop_extras, crop_options
from .tensors import image_to_pixels, mask_to_edit_mask, pixels_to_image

REGION_MODES = ("crop around mask", "full image")


class PaintByExampleEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PaintByExampleEdit",
            display_name="Paint by Example (all-in-one)",
            category=CATEGORY,
            description="Replaces the masked region of the image with the exemplar's object, in "
            "one node: crops around the mask, samples with ComfyUI's samplers (progress, "
            "previews and cancel work as usual), and stitches the edit back so pixels away from "
            "the mask are unchanged. The preview shows what the exemplar encoder saw.",
            inputs=[
                io.Model.Input("model", tooltip="From 'Load Paint by Example Model'."),
                io.Vae.Input("vae", tooltip="From 'Load Paint by Example Model'."),
                Encoder.Input("encoder", tooltip="From 'Load Paint by Example Model'."),
                io.Image.Input("image", tooltip="The picture to edit (a batch works too)."),
                io.Mask.Input("mask", tooltip="White = the region to replace."),
                io.Image.Input(
                    "exemplar",
                    tooltip="The object to paint in: one, or one per image of the batch.",
                ),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=0xFFFFFFFFFFFFFFFF,
                    control_after_generate=True,
                    tooltip="The random seed of the initial noise.",
                ),
                io.Int.Input("steps", default=50, min=1, max=10000, tooltip="Sampling steps."),
                io.Float.Input(
                    "cfg",
                    default=5.0,
                    min=0.0,
                    max=100.0,
                    step=0.1,
                    round=0.01,
                    tooltip="Guidance scale: how strongly the exemplar steers the edit (the "
                    "reference uses 5).",
                ),
                io.Combo.Input(
                    "sampler_name",
                    options=comfy.samplers.KSampler.SAMPLERS,
                    default="ddim",
                    tooltip="ComfyUI's sampler.",
                ),
                io.Combo.Input(
                    "scheduler",
                    options=comfy.samplers.KSampler.SCHEDULERS,
                    default="ddim_uniform",
                    tooltip="ComfyUI's scheduler; ddim_uniform with ddim follows the reference's "
                    "DDIM timesteps.",
                ),
                io.Combo.Input(
                    "region",
                    options=list(REGION_MODES),
                    tooltip="crop around mask: edit a crop at the working resolution and stitch "
                    "it back; full image: edit the whole picture at its own size.",
                ),
                *crop_options(),
                io.Combo.Input(
                    "exemplar_mode", options=list(EXEMPLAR_MODES), tooltip=EXEMPLAR_MODE_TOOLTIP
                ),
                io.Mask.Input(
                    "exemplar_mask",
                    optional=True,
                    tooltip="The exemplar's object mask (see exemplar_mask_marks); its "
                    "background is greyed.",
                ),
                mask_marks_input(),
                io.Float.Input(
                    "colour_match",
                    default=0.0,
                    min=0.0,
                    max=1.0,
                    step=0.05,
                    optional=True,
                    tooltip="Match the edit's colours to a ring of its surroundings (0 = off, 1 = "
                    "fully): against a colour cast; pixels outside the feathered mask stay as "
                    "they were.",
                ),
                *crop_extras(),
            ],
            outputs=[
                io.Image.Output(
                    "image_out",
                    display_name="image",
                    tooltip="The edited picture, at the input's size.",
                ),
            ],
        )

    @classmethod
    @plain_errors
    def execute(
        cls,
        model,
        vae,
        encoder,
        image,
        mask,
        exemplar,
        seed,
        steps,
        cfg,
        sampler_name,
        scheduler,
        region,
        context,
        resolution,
        grow,
        feather,
        exemplar_mode,
        exemplar_mask=None,
        exemplar_mask_marks=MASK_MARKS[0],
        colour_match=0.0,
        **extras,
    ) -> io.NodeOutput:
        require_paint_by_example(model)
        parts = ComfyEditParts(model, vae, encoder, steps, cfg, sampler_name, scheduler)
        with noted_warnings() as notes:
            edit_mask = mask_to_edit_mask(mask, image_to_pixels(image))  # refuses an empty mask
            object_mask = exemplar_object_mask(exemplar_mask, exemplar_mask_marks)
            result = conduct_edit(
                parts,
                image,
                edit_mask,
                exemplar,
                seed=seed,
                region="auto" if region == REGION_MODES[0] else "full",
                context=context,
                resolution=resolution,
                grow=grow,
                feather=feather,
                colour_match=colour_match,
                exemplar_mode=exemplar_mode,
                exemplar_mask=object_mask,
                **(CROP_EXTRAS | extras),
            )
            seen = exemplar_seen(exemplar, parts.exemplar_size, exemplar_mode, object_mask)
        return io.NodeOutput(
            pixels_to_image(result.images), ui=with_warnings(seen_preview(seen), notes)
        )
