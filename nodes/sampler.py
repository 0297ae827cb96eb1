"""The all-in-one edit: crop, encode, condition, sample with ComfyUI's KSampler, decode, stitch."""

from __future__ import annotations

import comfy.model_management
import comfy.samplers
import nodes as comfy_nodes  # ComfyUI's own nodes.py: common_ksampler brings progress, previews

from ..pbe_core import prepare, regions
from .conditioning import inpaint_conditioning
from .exemplar import (
    EXEMPLAR_MODE_TOOLTIP,
    EXEMPLAR_MODES,
    conditioning,
    encode_exemplars,
    learned_negative,
)
from .model import CATEGORY, ENCODER_TYPE, require_paint_by_example
from .regions import crop_options, plan_crop
from .tensors import image_to_pixels, mask_to_edit_mask, pixels_to_image, require_edit

REGION_MODES = ("crop around mask", "full image")


class PaintByExampleEdit:
    DESCRIPTION = (
        "Replaces the masked region of the image with the exemplar's object, in one node: crops "
        "around the mask, samples with ComfyUI's samplers (progress, previews and cancel work as "
        "usual), and stitches the edit back so pixels away from the mask are unchanged."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The edited picture, at the input's size.",)
    FUNCTION = "edit"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "From 'Load Paint by Example Model'."}),
                "vae": ("VAE", {"tooltip": "From 'Load Paint by Example Model'."}),
                "encoder": (ENCODER_TYPE, {"tooltip": "From 'Load Paint by Example Model'."}),
                "image": ("IMAGE", {"tooltip": "The picture to edit (a batch works too)."}),
                "mask": ("MASK", {"tooltip": "White = the region to replace."}),
                "exemplar": (
                    "IMAGE",
                    {"tooltip": "The object to paint in: one, or one per image of the batch."},
                ),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 0xFFFFFFFFFFFFFFFF,
                        "control_after_generate": True,
                        "tooltip": "The random seed of the initial noise.",
                    },
                ),
                "steps": (
                    "INT",
                    {"default": 50, "min": 1, "max": 10000, "tooltip": "Sampling steps."},
                ),
                "cfg": (
                    "FLOAT",
                    {
                        "default": 5.0,
                        "min": 0.0,
                        "max": 100.0,
                        "step": 0.1,
                        "round": 0.01,
                        "tooltip": "Guidance scale: how strongly the exemplar steers the edit "
                        "(the reference uses 5).",
                    },
                ),
                "sampler_name": (
                    comfy.samplers.KSampler.SAMPLERS,
                    {"default": "ddim", "tooltip": "ComfyUI's sampler."},
                ),
                "scheduler": (
                    comfy.samplers.KSampler.SCHEDULERS,
                    {
                        "default": "ddim_uniform",
                        "tooltip": "ComfyUI's scheduler; ddim_uniform with ddim follows the "
                        "reference's DDIM timesteps.",
                    },
                ),
                "region": (
                    REGION_MODES,
                    {
                        "tooltip": "crop around mask: edit a crop at the working resolution and "
                        "stitch it back; full image: edit the whole picture at its own size."
                    },
                ),
                **crop_options(),
                "exemplar_mode": (EXEMPLAR_MODES, {"tooltip": EXEMPLAR_MODE_TOOLTIP}),
            },
            "optional": {
                "exemplar_mask": (
                    "MASK",
                    {"tooltip": "White = the object in the exemplar; its background is greyed."},
                ),
            },
        }

    def edit(
        self,
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
    ):
        require_paint_by_example(model)
        pixels = image_to_pixels(image)
        edit_mask = mask_to_edit_mask(mask, pixels)
        require_edit(edit_mask)
        embeddings, _ = encode_exemplars(encoder, exemplar, exemplar_mode, exemplar_mask)
        pixels, edit_mask, embeddings = prepare.broadcast_batch(
            pixels, edit_mask, embeddings, names=("image", "mask", "exemplar")
        )
        if region == REGION_MODES[0]:
            plan = plan_crop(pixels, edit_mask, context, resolution, grow, feather)
        else:
            plan = regions.plan_full(pixels.shape[-2:])
        crop_pixels, crop_mask = regions.crop(pixels, edit_mask, plan)
        positive, negative, latent = inpaint_conditioning(
            conditioning(embeddings),
            conditioning(learned_negative(encoder)),
            vae,
            crop_pixels,
            crop_mask,
        )
        comfy.model_management.throw_exception_if_processing_interrupted()
        (samples,) = comfy_nodes.common_ksampler(
            model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent
        )
        decoded = vae.decode(samples["samples"]).movedim(-1, 1)
        result = regions.stitch(pixels, decoded, edit_mask, plan, grow=grow, feather=feather)
        return (pixels_to_image(result),)
