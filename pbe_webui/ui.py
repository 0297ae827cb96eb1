"""The script's panel in the img2img tab; its components' values are the script's arguments,
in the order of `arguments.ARGUMENTS`."""

from __future__ import annotations

import gradio as gr

from .inputs import (
    CROP_CONTEXT_RANGE,
    EXEMPLAR_MODES,
    LORA_STRENGTH_RANGE,
    MAX_CANDIDATES,
    SAMPLERS,
)
from .models import NO_LORA, left_out_note, list_loras, scan_loras, scan_models

UNUSED_CONTROLS = (
    "Paint by Example is steered by the exemplar, not by text: the tab's **prompts**, "
    "**denoising strength**, **masked content** and **sampling method / schedule type** do "
    "nothing here (choose the sampler below). Used: mask blur, mask mode, inpaint area and "
    "padding, resize mode, width and height, seed, sampling steps, CFG scale, batch count and "
    "batch size. No Stable Diffusion checkpoint is needed."
)


def model_choices() -> dict:
    models, left_out = scan_models()
    return {"choices": models, "info": left_out_note(left_out) or None}


def lora_choices() -> dict:
    _, left_out = scan_loras()
    note = "; ".join(f"{name}: {why}" for name, why in sorted(left_out.items()))
    return {"choices": list_loras(), "info": f"Left out: {note}." if note else None}


def build(script) -> list:
    """Fresh components for `script` (called again for every API runner; keeps no other state);
    sets the script's infotext fields."""
    models = model_choices()
    loras = lora_choices()
    with gr.Group():
        gr.Markdown(UNUSED_CONTROLS, elem_id=script.elem_id("unused_controls"))
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
                        value=models["choices"][0] if models["choices"] else None,
                        elem_id=script.elem_id("model"),
                        **models,
                    )
                    add_refresh_button(model, model_choices, script.elem_id("model_refresh"))
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
        with gr.Row():
            colour_match = gr.Slider(
                label="Colour match",
                info="Match the edit's colours to its surroundings (0: off)",
                minimum=0.0,
                maximum=1.0,
                step=0.05,
                value=0.0,
                elem_id=script.elem_id("colour_match"),
            )
            best_of = gr.Slider(
                label="Best of",
                info="Edits per image, the one most like the exemplar kept (region CLIP score)",
                minimum=1,
                maximum=MAX_CANDIDATES,
                step=1,
                value=1,
                elem_id=script.elem_id("best_of"),
            )
        with gr.Row():
            lora = gr.Dropdown(
                label="LoRA",
                value=NO_LORA,
                elem_id=script.elem_id("lora"),
                **loras,
            )
            add_refresh_button(lora, lora_choices, script.elem_id("lora_refresh"))
            lora_strength = gr.Slider(
                label="LoRA strength",
                minimum=LORA_STRENGTH_RANGE[0],
                maximum=LORA_STRENGTH_RANGE[1],
                step=0.05,
                value=1.0,
                elem_id=script.elem_id("lora_strength"),
            )
    script.infotext_fields = [
        (model, "PbE model"),
        (sampler, "PbE sampler"),
        (crop_context, "PbE crop context"),
        (exemplar_mode, "PbE exemplar mode"),
        (negative_weight, "PbE negative exemplar weight"),
        (colour_match, "PbE colour match"),
        (best_of, "PbE best of"),
        (lora, "PbE LoRA"),
        (lora_strength, "PbE LoRA strength"),
    ]
    return [
        exemplar,
        model,
        sampler,
        crop_context,
        exemplar_mode,
        negative_exemplar,
        negative_weight,
        colour_match,
        best_of,
        lora,
        lora_strength,
    ]


def add_refresh_button(dropdown, choices, elem_id: str) -> None:
    try:
        from modules.ui_common import create_refresh_button
    except ImportError:  # a webui without it: the list refreshes when the UI reloads
        return
    create_refresh_button(dropdown, lambda: None, choices, elem_id)
