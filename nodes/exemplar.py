"""Exemplar pictures -> the CONDITIONING Paint by Example's UNet attends to."""

from __future__ import annotations

import warnings

import comfy.model_management
import torch
from comfy_api.v0_0_2 import io, ui

from ..pbe_core import conditioning as pbe_conditioning
from ..pbe_core import prepare
from .messages import noted_warnings, plain_errors, with_warnings
from .model import CATEGORY, Encoder, encoder_of
from .tensors import PLACEHOLDER_SIZE, parse_weights, pixels_to_image

EXEMPLAR_MODES = ("squash", "crop", "pad")
EXEMPLAR_MODE_TOOLTIP = (
    "How a non-square exemplar becomes the encoder's square: squash (stretch, as the reference "
    "and training do), crop (centre crop, as diffusers does) or pad (grey borders)."
)
MASK_MARKS = ("background", "object")
MASK_MARKS_TOOLTIP = (
    "What white means in exemplar_mask. background: ComfyUI's convention, the MASK of Load Image "
    "on a cut-out (transparent background) picture; object: a mask painted on the object."
)


def exemplar_object_mask(exemplar_mask, marks: str):
    """exemplar_mask in `marks`' convention -> (B, 1, H, W) white = object, or None where it is
    Load Image's empty placeholder (an exemplar with no transparency: encode all of it)."""
    if exemplar_mask is None:
        return None
    if marks not in MASK_MARKS:
        raise ValueError(
            f"exemplar_mask_marks must be one of {', '.join(MASK_MARKS)}; got {marks!r}"
        )
    mask = prepare.mask_to_tensor(exemplar_mask, "exemplar_mask")
    if tuple(mask.shape[-2:]) == PLACEHOLDER_SIZE and not bool(mask.any()):
        warnings.warn(
            "exemplar_mask is Load Image's empty 64x64 mask (the exemplar picture has no "
            "transparency): the whole exemplar is encoded",
            stacklevel=2,
        )
        return None
    return 1 - mask if marks == "background" else mask


def mask_marks_input() -> io.Combo.Input:
    """Optional, last of the inputs: workflows saved before it existed keep their widgets."""
    return io.Combo.Input(
        "exemplar_mask_marks",
        options=list(MASK_MARKS),
        default=MASK_MARKS[0],
        optional=True,
        tooltip=MASK_MARKS_TOOLTIP,
    )


def seen_preview(seen: torch.Tensor) -> dict:
    """What the encoder saw, as a preview on the node."""
    return ui.PreviewImage(pixels_to_image(seen)).as_dict()


def unnormalised(pixels: torch.Tensor) -> torch.Tensor:
    """CLIP-normalised exemplar pixels -> [0, 1]: what the encoder saw, for a preview."""
    mean = torch.tensor(prepare.CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(prepare.CLIP_STD).view(1, 3, 1, 1)
    return (pixels.cpu().float() * std + mean).clamp(0, 1)


def exemplar_seen(exemplar, size: int, mode: str, exemplar_mask=None) -> torch.Tensor:
    """The exemplar as prepared for the encoder, in [0, 1] (N, 3, S, S)."""
    pixels = prepare.prepare_exemplar(exemplar, size=size, mode=mode, exemplar_mask=exemplar_mask)
    return unnormalised(pixels)


def encode_exemplars(encoder_patcher, exemplar, mode: str, exemplar_mask=None):
    """IMAGE (N, H, W, C) -> embeddings (N, 1, ctx) float32, and the pixels the encoder saw
    (N, 3, S, S) in [0, 1], for a preview."""
    encoder = encoder_of(encoder_patcher)
    pixels = prepare.prepare_exemplar(
        exemplar, size=encoder.config.image_size, mode=mode, exemplar_mask=exemplar_mask
    )
    embeddings = encoder(pixels.to(encoder_patcher.load_device))
    seen = unnormalised(pixels)
    return embeddings.to(comfy.model_management.intermediate_device(), torch.float32), seen


def learned_negative(encoder_patcher) -> torch.Tensor:
    """The learned unconditional vector (1, 1, ctx): the model's own negative."""
    vector = encoder_of(encoder_patcher).unconditional(1)
    return vector.to(comfy.model_management.intermediate_device(), torch.float32)


def conditioning(embeddings: torch.Tensor) -> list:
    return [[embeddings, {}]]


class PaintByExampleExemplarEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PaintByExampleExemplarEncode",
            display_name="Paint by Example Exemplar Encode",
            category=CATEGORY,
            description="Encodes the exemplar (the object to paint in) into the positive "
            "conditioning; the negative is the model's learned unconditional vector, or a "
            "negative exemplar blended in. The preview shows what the encoder saw.",
            inputs=[
                Encoder.Input("encoder", tooltip="From 'Load Paint by Example Model'."),
                io.Image.Input(
                    "exemplar",
                    tooltip="The object to paint in; crop it to the object for best results.",
                ),
                io.Combo.Input(
                    "resize_mode", options=list(EXEMPLAR_MODES), tooltip=EXEMPLAR_MODE_TOOLTIP
                ),
                io.Combo.Input(
                    "combine",
                    options=["per image", "blend"],
                    tooltip="per image: one conditioning per exemplar, paired with the images of "
                    "the batch; blend: one conditioning, the weighted mean of all.",
                ),
                io.String.Input(
                    "blend_weights",
                    default="",
                    tooltip="For blend: one weight per exemplar image, e.g. '1, 0.5'. Empty: "
                    "equal weights.",
                ),
                io.Float.Input(
                    "negative_weight",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.05,
                    tooltip="With a negative exemplar: 1 replaces the learned unconditional "
                    "vector by it, 0 ignores it, between blends the two.",
                ),
                io.Mask.Input(
                    "exemplar_mask",
                    optional=True,
                    tooltip="The exemplar's object mask (see exemplar_mask_marks): the "
                    "background is greyed and the picture cropped to the object before encoding.",
                ),
                io.Image.Input(
                    "negative_exemplar",
                    optional=True,
                    tooltip="Something to steer away from (the first image is used).",
                ),
                mask_marks_input(),
            ],
            outputs=[
                io.Conditioning.Output(
                    "positive",
                    display_name="positive",
                    tooltip="One embedding per exemplar image (paired with the image batch), or "
                    "their blend.",
                ),
                io.Conditioning.Output(
                    "negative",
                    display_name="negative",
                    tooltip="The learned unconditional vector, or its blend with the negative "
                    "exemplar.",
                ),
            ],
        )

    @classmethod
    @plain_errors
    def execute(
        cls,
        encoder,
        exemplar,
        resize_mode,
        combine,
        blend_weights,
        negative_weight,
        exemplar_mask=None,
        negative_exemplar=None,
        exemplar_mask_marks=MASK_MARKS[0],
    ) -> io.NodeOutput:
        with noted_warnings() as notes:
            object_mask = exemplar_object_mask(exemplar_mask, exemplar_mask_marks)
            embeddings, seen = encode_exemplars(encoder, exemplar, resize_mode, object_mask)
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
        return io.NodeOutput(
            conditioning(embeddings),
            conditioning(negative),
            ui=with_warnings(seen_preview(seen), notes),
        )
