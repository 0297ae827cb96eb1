"""The script's panel in the img2img tab; its components' values are the script's arguments."""

from __future__ import annotations

import gradio as gr

from .inputs import CROP_CONTEXT_RANGE, EXEMPLAR_MODES, SAMPLERS
from .models import list_models


def build(script) -> list:
    """Fresh components for `script` (called again for every API runner; keeps no other state),
    in the order `job.run` takes them; sets the script's infotext fields."""
    models = list_models()
    with gr.Group():
        with gr.Row():
            exemplar = gr.Image(
                label="Exemplar (transparent background: cut-out object)",
                type="pil",
                image_mode="RGBA",
                height=256,
                elem_id=script.elem_id("exemplar"),
            )
            with gr.Column():
                with gr.Row():
                    model = gr.Dropdown(
                        label="Model",
                        choices=models,
                        value=models[0] if models else None,
                        elem_id=script.elem_id("model"),
                    )
                    add_refresh_button(model, script.elem_id("model_refresh"))
                sampler = gr.Dropdown(
                    label="Sampler",
                    choices=list(SAMPLERS),
                    value="PLMS",
                    elem_id=script.elem_id("sampler"),
                )
                crop_context = gr.Slider(
                    label="Crop context (only masked)",
                    minimum=CROP_CONTEXT_RANGE[0],
                    maximum=CROP_CONTEXT_RANGE[1],
                    step=0.1,
                    value=1.5,
                    elem_id=script.elem_id("crop_context"),
                )
                exemplar_mode = gr.Radio(
                    label="Exemplar fit",
                    choices=list(EXEMPLAR_MODES),
                    value="squash",
                    elem_id=script.elem_id("exemplar_mode"),
                )
        with gr.Accordion("Negative exemplar", open=False):
            with gr.Row():
                negative_exemplar = gr.Image(
                    label="Negative exemplar",
                    type="pil",
                    image_mode="RGB",
                    height=192,
                    elem_id=script.elem_id("negative_exemplar"),
                )
                negative_weight = gr.Slider(
                    label="Negative exemplar weight",
                    minimum=0.0,
                    maximum=1.0,
                    step=0.05,
                    value=1.0,
                    elem_id=script.elem_id("negative_weight"),
                )
    script.infotext_fields = [
        (model, "PbE model"),
        (sampler, "PbE sampler"),
        (crop_context, "PbE crop context"),
        (exemplar_mode, "PbE exemplar mode"),
        (negative_weight, "PbE negative exemplar weight"),
    ]
    return [
        exemplar,
        model,
        sampler,
        crop_context,
        exemplar_mode,
        negative_exemplar,
        negative_weight,
    ]


def add_refresh_button(dropdown, elem_id: str) -> None:
    try:
        from modules.ui_common import create_refresh_button
    except ImportError:  # a webui without it: the list refreshes when the UI reloads
        return
    create_refresh_button(dropdown, lambda: None, lambda: {"choices": list_models()}, elem_id)
