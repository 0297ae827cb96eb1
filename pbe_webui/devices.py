"""Where the edit runs, in which dtype, and making room on the GPU when memory is short."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from modules import devices, shared

from pbe_core.pipeline import PaintByExample

GPU_WORKSPACE_BYTES = 3 * 2**30  # activations of a 512 px fp16 edit, with room to spare


def target_device() -> torch.device:
    chooser = getattr(devices, "get_device_for", None)  # `--use-cpu paint_by_example` works too
    return torch.device(chooser("paint_by_example") if chooser else devices.device)


def target_dtype(device: torch.device) -> torch.dtype:
    """fp32 on the CPU; elsewhere the webui's inference dtype (fp32 with --no-half or
    --precision full), unless that is a storage-only type such as Forge's fp8."""
    if device.type == "cpu":
        return torch.float32
    dtype = getattr(devices, "dtype_inference", devices.dtype)
    return dtype if dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float16


def weight_bytes(pipe: PaintByExample) -> int:
    models = (pipe.models.unet, pipe.models.vae, pipe.models.encoder)
    return sum(t.numel() * t.element_size() for model in models for t in model.parameters())


def memory_is_short(pipe: PaintByExample, device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    if getattr(shared.cmd_opts, "lowvram", False) or getattr(shared.cmd_opts, "medvram", False):
        return True
    devices.torch_gc()
    free, _ = torch.cuda.mem_get_info(device)
    resident = 0 if pipe.device == device else weight_bytes(pipe)
    return free < resident + GPU_WORKSPACE_BYTES


def move_webui_model_off_gpu() -> Callable[[], None] | None:
    """Frees the GPU of the webui's own model; returns how to bring it back (None: nothing to)."""
    for forge_module in ("backend.memory_management", "ldm_patched.modules.model_management"):
        try:
            management = importlib.import_module(forge_module)
        except ImportError:
            continue
        management.unload_all_models()  # Forge loads its models back on demand
        return None
    from modules import sd_models

    model = getattr(getattr(sd_models, "model_data", None), "sd_model", None)  # never loads one
    if model is None:
        return None
    sd_models.send_model_to_cpu(model)
    return lambda: sd_models.send_model_to_device(model)
