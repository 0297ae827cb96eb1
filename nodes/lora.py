"""A Paint by Example LoRA (pbe_core.train.lora's file) on the loaded model, as ComfyUI patches.

The UNet part (`diffusion_model.<ldm module>.lora_down/lora_up/alpha`) goes through ComfyUI's
own LoRA machinery onto the MODEL, so it stays a patch the host applies when it loads the
model (ComfyUI's LoraLoaderModelOnly applies that part just the same); the encoder's trained
parts (mapper, final LayerNorm, projection, learned vector), which no ComfyUI loader knows,
are merged into a copy of the exemplar encoder. Equal to merging the file into the weights.
"""

from __future__ import annotations

import copy

import comfy.lora
import comfy.model_patcher
import folder_paths
import torch
from comfy_api.v0_0_2 import io

from ..pbe_core.train.lora import UNET_PREFIX, LoRAError, read_lora
from .messages import plain_errors
from .model import CATEGORY, Encoder, require_paint_by_example

LORA_FOLDER = "loras"  # ComfyUI's own folder for LoRA files


def unet_patches(model, tensors: dict, name: str) -> dict:
    """The file's UNet adapters as ComfyUI patches for this MODEL; every adapter must land."""
    unet_part = {key: value for key, value in tensors.items() if key.startswith(UNET_PREFIX)}
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    patches = comfy.lora.load_lora(unet_part, key_map, log_missing=False)
    adapters = sum(key.endswith(".lora_down.weight") for key in unet_part)
    if len(patches) != adapters:
        raise LoRAError(
            f"lora_name: {len(patches)} of the {adapters} UNet adapters in '{name}' fit this model: "
            "this LoRA was trained on another base model; load the model it was trained on"
        )
    return patches


@torch.no_grad()
def encoder_with_parts(encoder, tensors: dict, name: str, strength: float):
    """A copy of the exemplar encoder with the file's trained parts merged in by `strength`
    (the loaded encoder stays as it is for other nodes)."""
    model = copy.deepcopy(encoder.model)
    live = dict(model.named_parameters())
    for key, value in tensors.items():
        if key.startswith(UNET_PREFIX):
            continue
        local = key.removeprefix("cond_stage_model.")
        if local not in live or tuple(live[local].shape) != tuple(value.shape):
            raise LoRAError(
                f"lora_name: '{name}' holds {key}, which is no weight of this model's exemplar "
                "encoder (or has another shape): a LoRA of another base model"
            )
        target = live[local]
        target.add_(
            (value.to(target.device, torch.float32) - target.float()).to(target.dtype) * strength
        )
    return comfy.model_patcher.ModelPatcher(
        model, load_device=encoder.load_device, offload_device=encoder.offload_device
    )


class PaintByExampleLoraLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PaintByExampleLoraLoader",
            display_name="Paint by Example LoRA",
            category=CATEGORY,
            description="Applies a Paint by Example LoRA (written by `python -m pbe_core train "
            "--lora`) to the model and the exemplar encoder of 'Load Paint by Example Model'. "
            "ComfyUI's LoraLoaderModelOnly applies only the UNet part of such a file.",
            inputs=[
                io.Model.Input("model", tooltip="From 'Load Paint by Example Model'."),
                Encoder.Input("encoder", tooltip="From 'Load Paint by Example Model'."),
                io.Combo.Input(
                    "lora_name",
                    options=folder_paths.get_filename_list(LORA_FOLDER),
                    tooltip="A Paint by Example LoRA file in models/loras.",
                ),
                io.Float.Input(
                    "strength",
                    default=1.0,
                    min=-4.0,
                    max=4.0,
                    step=0.05,
                    tooltip="1 applies the LoRA as trained, 0 not at all.",
                ),
            ],
            outputs=[
                io.Model.Output("model_out", display_name="model", tooltip="The patched UNet."),
                Encoder.Output(
                    "encoder_out",
                    display_name="encoder",
                    tooltip="The exemplar encoder with the LoRA's trained parts.",
                ),
            ],
        )

    @classmethod
    @plain_errors
    def execute(cls, model, encoder, lora_name, strength) -> io.NodeOutput:
        require_paint_by_example(model)
        tensors, _ = read_lora(folder_paths.get_full_path_or_raise(LORA_FOLDER, lora_name))
        patched_model = model.clone()
        patched_model.add_patches(unet_patches(model, tensors, lora_name), strength)
        return io.NodeOutput(
            patched_model, encoder_with_parts(encoder, tensors, lora_name, strength)
        )
