"""Exemplar pictures -> the CONDITIONING Paint by Example's UNet attends to."""

from __future__ import annotations

import comfy.model_management
import nodes as comfy_nodes  # ComfyUI's own nodes.py (this package is imported by its full name)
import torch

from ..pbe_core import conditioning as pbe_conditioning
from ..pbe_core import prepare
from .model import CATEGORY, ENCODER_TYPE, encoder_of
from .tensors import parse_weights, pixels_to_image

EXEMPLAR_MODES = ("squash", "crop", "pad")
EXEMPLAR_MODE_TOOLTIP = (
    "How a non-square exemplar becomes the encoder's square: squash (stretch, as the reference "
    "and training do), crop (centre crop, as diffusers does) or pad (grey borders)."
)


def encode_exemplars(encoder_patcher, exemplar, mode: str, exemplar_mask=None):
    """IMAGE (N, H, W, C) -> embeddings (N, 1, ctx) float32, and the pixels the encoder saw
    (N, 3, S, S) in [0, 1], for a preview."""
    encoder = encoder_of(encoder_patcher)
    pixels = prepare.prepare_exemplar(
        exemplar, size=encoder.config.image_size, mode=mode, exemplar_mask=exemplar_mask
    )
    embeddings = encoder(pixels.to(encoder_patcher.load_device))
    mean = torch.tensor(prepare.CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(prepare.CLIP_STD).view(1, 3, 1, 1)
    seen = (pixels * std + mean).clamp(0, 1)
    return embeddings.to(comfy.model_management.intermediate_device(), torch.float32), seen


def learned_negative(encoder_patcher) -> torch.Tensor:
    """The learned unconditional vector (1, 1, ctx): the model's own negative."""
    vector = encoder_of(encoder_patcher).unconditional(1)
    return vector.to(comfy.model_management.intermediate_device(), torch.float32)


def conditioning(embeddings: torch.Tensor) -> list:
    return [[embeddings, {}]]


class PaintByExampleExemplarEncode:
    DESCRIPTION = (
        "Encodes the exemplar (the object to paint in) into the positive conditioning; the "
        "negative is the model's learned unconditional vector, or a negative exemplar blended in."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = (
        "One embedding per exemplar image (paired with the image batch), or their blend.",
        "The learned unconditional vector, or its blend with the negative exemplar.",
    )
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "encoder": (ENCODER_TYPE, {"tooltip": "From 'Load Paint by Example Model'."}),
                "exemplar": (
                    "IMAGE",
                    {"tooltip": "The object to paint in; crop it to the object for best results."},
                ),
                "resize_mode": (EXEMPLAR_MODES, {"tooltip": EXEMPLAR_MODE_TOOLTIP}),
                "combine": (
                    ("per image", "blend"),
                    {
                        "tooltip": "per image: one conditioning per exemplar, paired with the "
                        "images of the batch; blend: one conditioning, the weighted mean of all."
                    },
                ),
                "blend_weights": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "For blend: one weight per exemplar image, e.g. '1, 0.5'. "
                        "Empty: equal weights.",
                    },
                ),
                "negative_weight": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.05,
                        "tooltip": "With a negative exemplar: 1 replaces the learned "
                        "unconditional vector by it, 0 ignores it, between blends the two.",
                    },
                ),
            },
            "optional": {
                "exemplar_mask": (
                    "MASK",
                    {
                        "tooltip": "White = the object. Its background is greyed and the picture "
                        "cropped to the object before encoding."
                    },
                ),
                "negative_exemplar": (
                    "IMAGE",
                    {"tooltip": "Something to steer away from (the first image is used)."},
                ),
            },
        }

    def encode(
        self,
        encoder,
        exemplar,
        resize_mode,
        combine,
        blend_weights,
        negative_weight,
        exemplar_mask=None,
        negative_exemplar=None,
    ):
        embeddings, seen = encode_exemplars(encoder, exemplar, resize_mode, exemplar_mask)
        if combine == "blend":
            embeddings = pbe_conditioning.blend_embeddings(
                embeddings, parse_weights(blend_weights, embeddings.shape[0])
            )
        steer = None
        if negative_exemplar is not None:
            steer, _ = encode_exemplars(encoder, negative_exemplar[:1], resize_mode)
        negative = pbe_conditioning.unconditional_context(
            learned_negative(encoder), steer, negative_weight
        )
        preview = comfy_nodes.PreviewImage().save_images(pixels_to_image(seen), "pbe_exemplar")
        return {"ui": preview["ui"], "result": (conditioning(embeddings), conditioning(negative))}
