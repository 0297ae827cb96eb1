"""LoRA for Paint by Example: low-rank adapters on the UNet, the small encoder parts in full.

File format (safetensors): the UNet's adapters in the kohya / ComfyUI convention on the
original ldm names, `diffusion_model.<module>.lora_down.weight`, `.lora_up.weight` and `.alpha`
(the delta is alpha / rank x up @ down), so ComfyUI's own LoRA loaders find the UNet part on
a MODEL; the trained encoder parts as full tensors under their checkpoint names
(`cond_stage_model.mapper.*`, `cond_stage_model.final_ln.*`, `proj_out.*`, `learnable_vector`);
and the metadata entry `pbe_lora` (JSON: rank, alpha, targets, encoder parts).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from .. import keymaps
from ..checkpoint import CheckpointError, Models, encoder_state_dict
from ..files import atomic_write

METADATA_KEY = "pbe_lora"
UNET_PREFIX = "diffusion_model."
# Target groups -> the module names (suffixes of the UNet's module paths) they adapt.
TARGETS = {
    "attention": ("to_q", "to_k", "to_v", "to_out.0"),  # self- and cross-attention
    "proj": ("proj_in", "proj_out"),  # the spatial transformers' 1x1 convolutions
    "ff": ("ff.net.0.proj", "ff.net.2"),  # the transformers' feed-forward layers
    "conv": ("in_layers.2", "out_layers.3"),  # the res blocks' 3x3 convolutions
}


class LoRAError(CheckpointError):
    """A LoRA file that is not one, or does not fit the base model; says which and why."""


def target_modules(unet: nn.Module, targets: Sequence[str]) -> dict[str, nn.Module]:
    unknown = set(targets) - set(TARGETS)
    if unknown:
        raise ValueError(f"LoRA targets: unknown {sorted(unknown)}; valid: {', '.join(TARGETS)}")
    suffixes = tuple("." + s for group in targets for s in TARGETS[group])
    return {
        path: module
        for path, module in unet.named_modules()
        if path.endswith(suffixes) and isinstance(module, nn.Linear | nn.Conv2d)
    }


class LoRALayer(nn.Module):
    """down (rank outputs, the base layer's kernel) then up (1x1); up starts at zero, so a new
    adapter changes nothing until trained."""

    def __init__(self, base: nn.Module, rank: int):
        super().__init__()
        if isinstance(base, nn.Linear):
            self.down = nn.Linear(base.in_features, rank, bias=False)
            self.up = nn.Linear(rank, base.out_features, bias=False)
        else:
            self.down = nn.Conv2d(
                base.in_channels, rank, base.kernel_size, base.stride, base.padding, bias=False
            )
            self.up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)

    def delta(self) -> torch.Tensor:
        """up @ down in the base weight's shape."""
        down, up = self.down.weight, self.up.weight
        product = up.flatten(1) @ down.flatten(1)
        return product.reshape(up.shape[0], *down.shape[1:])


class LoRAAdapters(nn.Module):
    """Adapters of one rank on the UNet's `targets`; `attached()` adds them to its outputs."""

    def __init__(self, unet: nn.Module, rank: int, alpha: float | None = None,
                 targets: Sequence[str] = ("attention",)):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1; got {rank}")
        self.unet_ref = [unet]  # a list, so the UNet is not registered as a submodule
        self.rank, self.alpha, self.targets = rank, float(alpha or rank), tuple(targets)
        self.paths = list(target_modules(unet, self.targets))
        if not self.paths:
            raise ValueError(f"the UNet has no modules for LoRA targets {self.targets}")
        weight = unet.input_blocks[0][0].weight
        self.layers = nn.ModuleList(LoRALayer(unet.get_submodule(p), rank) for p in self.paths)
        self.to(device=weight.device)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        unet, scale = self.unet_ref[0], self.scale

        def hook(layer: LoRALayer):
            return lambda _module, inputs, output: output + scale * layer.up(layer.down(inputs[0]))

        handles = [
            unet.get_submodule(path).register_forward_hook(hook(layer))
            for path, layer in zip(self.paths, self.layers, strict=True)
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def file_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {}
        for path, layer in zip(self.paths, self.layers, strict=True):
            key = UNET_PREFIX + path
            tensors[f"{key}.lora_down.weight"] = layer.down.weight.detach().float().contiguous()
            tensors[f"{key}.lora_up.weight"] = layer.up.weight.detach().float().contiguous()
            tensors[f"{key}.alpha"] = torch.tensor(self.alpha)
        return tensors


def _encoder_parts_state(models: Models, parts: Sequence[str]) -> dict[str, torch.Tensor]:
    """The named encoder parts under their original checkpoint names."""
    state = encoder_state_dict(models.encoder)
    chosen = {k: v for k, v in state.items() if k.split(".")[0] in parts}
    return keymaps.join_original({}, {}, chosen)


def save_lora(adapters: LoRAAdapters, models: Models, path: str | os.PathLike,
              encoder_parts: Sequence[str]) -> Path:
    """Write the adapters and the trained encoder parts (`mapper`, `final_ln`, `proj_out`,
    `learnable_vector`) as one small safetensors file, atomically."""
    from safetensors.torch import save_file

    tensors = adapters.file_tensors()
    tensors.update({k: v.detach().float().contiguous().clone() for k, v in _encoder_parts_state(models, encoder_parts).items()})
    description = {"rank": adapters.rank, "alpha": adapters.alpha, "targets": list(adapters.targets),
                   "encoder_parts": list(encoder_parts), "version": 1}
    metadata = {"format": "pt", METADATA_KEY: json.dumps(description),
                "ss_network_dim": str(adapters.rank), "ss_network_alpha": str(adapters.alpha)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_lora(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """A Paint by Example LoRA file -> (tensors, description); LoRAError if it is not one."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise LoRAError(f"{path}: no such LoRA file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # noqa: BLE001 - any reader failure means not a safetensors LoRA
        raise LoRAError(f"{path}: not a safetensors LoRA file ({type(error).__name__})") from None
    if METADATA_KEY not in metadata:
        if any(k.startswith(("lora_te", "lora_unet_", "text_encoder.")) for k in tensors):
            what = "a LoRA for a text-conditioned Stable Diffusion model"
        elif any(".lora_down." in k for k in tensors):
            what = "a LoRA without the Paint by Example description"
        else:
            what = "no LoRA at all"
        raise LoRAError(
            f"{path}: not a Paint by Example LoRA (it is {what}); use a file written by "
            "`python -m pbe_core train --lora RANK`"
        )
    return tensors, json.loads(metadata[METADATA_KEY])


def _check_shape(path: Path, key: str, got: torch.Size, want: torch.Size) -> None:
    if tuple(got) != tuple(want):
        raise LoRAError(
            f"{path}: {key} has shape {tuple(got)}, the base model's needs {tuple(want)}: this "
            "LoRA was trained on another base model; apply it to the model it was trained on"
        )


@torch.no_grad()
def apply_lora(models: Models, path: str | os.PathLike, strength: float = 1.0) -> Models:
    """Merge a LoRA file into `models` in place: each adapted UNet weight gains
    strength x alpha / rank x up @ down; each encoder part moves from the base towards the
    file's tensor by `strength` (1: the file's). Every shape is checked before any weight
    changes. Returns `models`."""
    from .loop import ENCODER_PARTS  # loop imports this module's TARGETS

    path = Path(path)
    tensors, _ = read_lora(path)
    unet = models.unet
    encoder_live = dict(models.encoder.named_parameters())
    unet_keys = sorted(k[: -len(".lora_down.weight")] for k in tensors if k.endswith(".lora_down.weight"))
    updates = []
    for key in unet_keys:
        module_path = key[len(UNET_PREFIX):]
        try:
            module = unet.get_submodule(module_path)
        except AttributeError:
            raise LoRAError(f"{path}: {key} names no layer of the base model's UNet") from None
        down, up = tensors[f"{key}.lora_down.weight"].float(), tensors[f"{key}.lora_up.weight"].float()
        alpha = float(tensors.get(f"{key}.alpha", torch.tensor(float(down.shape[0]))))
        delta = (up.flatten(1) @ down.flatten(1)).reshape(up.shape[0], *down.shape[1:])
        _check_shape(path, key, delta.shape, module.weight.shape)
        merged = module.weight.float() + delta.to(module.weight.device) * (strength * alpha / down.shape[0])
        updates.append((module.weight, merged))
    for key, value in tensors.items():
        if key.startswith(UNET_PREFIX):
            continue
        local = key.removeprefix("cond_stage_model.")
        if local.split(".")[0] not in ENCODER_PARTS or local not in encoder_live:
            raise LoRAError(f"{path}: {key} is not a weight of the exemplar encoder's trained parts")
        target = encoder_live[local]
        _check_shape(path, key, value.shape, target.shape)
        updates.append((target, torch.lerp(target.float(), value.to(target.device, torch.float32), strength)))
    for weight, value in updates:  # all checked before any weight changes
        weight.copy_(value)
    return models

