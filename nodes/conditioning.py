"""The masked-image latent and edit mask Paint by Example's UNet takes, on the conditioning."""

from __future__ import annotations

import node_helpers
import torch
from comfy_api.v0_0_2 import io

from ..pbe_core import prepare
from .messages import noted_warnings, plain_errors, with_warnings
from .model import CATEGORY
from .tensors import crop_to_multiple, image_to_pixels, mask_to_edit_mask, pixels_to_image


def inpaint_conditioning(positive, negative, vae, pixels: torch.Tensor, edit_mask: torch.Tensor):
    """(B, 3, H, W) pixels and (B, 1, H, W) edit mask, H and W multiples of 8 -> positive and
    negative carrying `concat_latent_image` (the source with the edit region grey, through the
    VAE) and `concat_mask` (the edit mask at pixel size, which PaintByExampleModel binarises and
    resizes to latent size bilinearly, unrounded, as trained), and an empty latent: sampling
    starts from pure noise, as the reference does."""
    # one latent per exemplar embedding too: ComfyUI would silently drop the extra ones
    exemplars = torch.empty(max(embedding.shape[0] for embedding, _ in positive), 0)
    pixels, edit_mask, _ = prepare.broadcast_batch(
        pixels, edit_mask, exemplars, names=("image", "mask", "positive (exemplars)")
    )
    keep = prepare.edit_to_keep_mask(edit_mask)
    masked = prepare.masked_image(prepare.to_model_range(pixels), keep)
    return attach_inpaint_inputs(positive, negative, encode_masked(vae, masked), edit_mask)


def encode_masked(vae, masked: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) masked image in [-1, 1] -> its latent through ComfyUI's VAE ([0, 1] BHWC)."""
    return vae.encode(pixels_to_image((masked + 1) / 2))


def attach_inpaint_inputs(positive, negative, masked_latent, edit_mask: torch.Tensor):
    """The conditionings carrying the masked-image latent and the edit mask, and the empty
    latent sampling starts from."""
    values = {"concat_latent_image": masked_latent, "concat_mask": edit_mask.contiguous()}
    latent = {"samples": torch.zeros_like(masked_latent)}
    return (
        node_helpers.conditioning_set_values(positive, values),
        node_helpers.conditioning_set_values(negative, values),
        latent,
    )


class PaintByExampleInpaintConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PaintByExampleInpaintConditioning",
            display_name="Paint by Example Inpaint Conditioning",
            category=CATEGORY,
            description="Adds the source image (edit region greyed, through the VAE) and the edit "
            "mask to the conditioning, for KSampler / KSamplerAdvanced with a Paint by Example "
            "model. Like InpaintModelConditioning, but with the mask handling of the reference: "
            "the mask is binarised at 0.5 in pixels and reaches the UNet resized bilinearly, not "
            "rounded.",
            inputs=[
                io.Conditioning.Input(
                    "positive", tooltip="From 'Paint by Example Exemplar Encode'."
                ),
                io.Conditioning.Input(
                    "negative", tooltip="From 'Paint by Example Exemplar Encode'."
                ),
                io.Vae.Input("vae", tooltip="From 'Load Paint by Example Model'."),
                io.Image.Input(
                    "image", tooltip="The picture to edit (cropped to a multiple of 8 pixels)."
                ),
                io.Mask.Input(
                    "mask", tooltip="White = the region to replace with the exemplar's object."
                ),
            ],
            outputs=[
                io.Conditioning.Output(
                    "positive_out",
                    display_name="positive",
                    tooltip="The positive conditioning with the inpainting inputs attached.",
                ),
                io.Conditioning.Output(
                    "negative_out",
                    display_name="negative",
                    tooltip="The negative conditioning with the inpainting inputs attached.",
                ),
                io.Latent.Output(
                    "latent",
                    display_name="latent",
                    tooltip="An empty latent of the image's size: sampling starts from pure "
                    "noise, as the model was trained. Keep denoise at 1.0.",
                ),
            ],
        )

    @classmethod
    @plain_errors
    def execute(cls, positive, negative, vae, image, mask) -> io.NodeOutput:
        with noted_warnings() as notes:
            pixels = image_to_pixels(image)
            edit_mask = mask_to_edit_mask(mask, pixels)
            pixels, edit_mask = crop_to_multiple(pixels, edit_mask)
            result = inpaint_conditioning(positive, negative, vae, pixels, edit_mask)
        return io.NodeOutput(*result, ui=with_warnings(None, notes))
