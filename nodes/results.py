"""After the edit: colour match the edited region, and rank a batch of results by the paper's
region CLIP score (pbe_core.colour, pbe_core.evaluate)."""

from __future__ import annotations

import torch
from comfy_api.v0_0_2 import io

from ..pbe_core import colour
from ..pbe_core.evaluate import region_clip_score
from .exemplar import MASK_MARKS, exemplar_object_mask, mask_marks_input
from .messages import noted_warnings, plain_errors, with_warnings
from .model import CATEGORY, Encoder, encoder_of
from .tensors import image_to_pixels, mask_to_edit_mask, pixels_to_image


class PaintByExampleColourMatch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PaintByExampleColourMatch",
            display_name="Paint by Example Colour Match",
            category=CATEGORY,
            description="Matches the colours of the edited region (its Lab mean and spread) to a "
            "ring of its surroundings, against the colour cast an edit can leave. Pixels outside "
            "the feathered mask stay as they were, bit for bit.",
            inputs=[
                io.Image.Input("image", tooltip="The edited picture (after the stitch)."),
                io.Mask.Input("mask", tooltip="The edit mask the picture was edited with."),
                io.Float.Input(
                    "strength",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.05,
                    tooltip="0 leaves the picture as it is, 1 matches fully.",
                ),
                io.Int.Input(
                    "grow",
                    default=0,
                    min=-256,
                    max=256,
                    tooltip="The grow the edit was stitched with (the region's extent).",
                ),
                io.Int.Input(
                    "feather",
                    default=8,
                    min=0,
                    max=256,
                    tooltip="The feather the edit was stitched with: the match fades out over it.",
                ),
                io.Int.Input(
                    "ring",
                    default=16,
                    min=1,
                    max=256,
                    tooltip="Width in pixels of the ring around the feathered mask whose colours "
                    "the region is matched to.",
                ),
            ],
            outputs=[
                io.Image.Output(
                    "image_out", display_name="image", tooltip="The picture, colour matched."
                ),
            ],
        )

    @classmethod
    @plain_errors
    def execute(cls, image, mask, strength, grow, feather, ring) -> io.NodeOutput:
        with noted_warnings() as notes:
            pixels = image_to_pixels(image)
            edit_mask = mask_to_edit_mask(mask, pixels)
            matched = colour.colour_match(
                pixels, edit_mask, strength, grow=grow, feather=feather, ring=ring
            )
        return io.NodeOutput(pixels_to_image(matched), ui=with_warnings(None, notes))


class PaintByExampleRankByClipScore(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PaintByExampleRankByClipScore",
            display_name="Paint by Example Rank by CLIP Score",
            category=CATEGORY,
            description="Orders a batch of edits (several seeds of one picture) by the paper's "
            "quality measure: the CLIP similarity between the exemplar and each edited region "
            "(100 x cosine, on the model's own CLIP tower). Best first, with the scores.",
            inputs=[
                Encoder.Input(
                    "encoder", tooltip="From 'Load Paint by Example Model': its CLIP tower scores."
                ),
                io.Image.Input("images", tooltip="The edits to rank: a batch of results."),
                io.Mask.Input("mask", tooltip="The edit mask (white = the edited region)."),
                io.Image.Input("exemplar", tooltip="The exemplar the edits were made with."),
                io.Mask.Input(
                    "exemplar_mask",
                    optional=True,
                    tooltip="The exemplar's object mask, as given to the edit.",
                ),
                mask_marks_input(),
            ],
            outputs=[
                io.Image.Output("ranked", display_name="ranked", tooltip="The edits, best first."),
                io.Image.Output("best", display_name="best", tooltip="The best edit alone."),
                io.String.Output(
                    "scores",
                    display_name="scores",
                    tooltip="The region CLIP score of each ranked edit, best first, e.g. "
                    "'81.2, 79.5'.",
                ),
            ],
        )

    @classmethod
    @plain_errors
    def execute(
        cls, encoder, images, mask, exemplar, exemplar_mask=None, exemplar_mask_marks=MASK_MARKS[0]
    ) -> io.NodeOutput:
        with noted_warnings() as notes:
            pixels = image_to_pixels(images, "images")
            edit_mask = mask_to_edit_mask(mask, pixels)
            object_mask = exemplar_object_mask(exemplar_mask, exemplar_mask_marks)
            tower = encoder_of(encoder).transformer
            scores = region_clip_score(
                pixels, edit_mask, exemplar[:1], tower, exemplar_mask=object_mask
            )
        order = torch.argsort(scores, descending=True, stable=True)
        ranked = pixels[order]
        text = ", ".join(f"{score:.1f}" for score in scores[order].tolist())
        ui = with_warnings({"text": [text]}, notes)
        return io.NodeOutput(pixels_to_image(ranked), pixels_to_image(ranked[:1]), text, ui=ui)
