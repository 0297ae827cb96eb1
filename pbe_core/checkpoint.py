"""Reading and writing Paint by Example weights in every layout users have.

Layouts:
- `original`: the released Lightning `model.ckpt` (a pickle, read with `weights_only=True`, so
  it can never run code), nested `state_dict`, with or without EMA keys;
- `single-file`: one `.safetensors` with the original key names (what ComfyUI/A1111 users keep);
- `diffusers`: a folder with `unet/`, `vae/`, `image_encoder/` (`.safetensors` or `.bin`,
  fp32 or fp16).

Models are built on the meta device and take the loaded tensors by assignment, so loading
never holds a second full copy of the weights.
"""

from __future__ import annotations

import json
import mmap
import os
import pickle
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import keymaps
from .files import atomic_write
from .models.configs import (
    ConfigError,
    infer_encoder_config,
    infer_unet_config,
    infer_vae_config,
)
from .models.exemplar_encoder import ExemplarEncoder
from .models.unet import UNet
from .models.vae import AutoencoderKL

StateDict = dict[str, torch.Tensor]
KeyFilter = Callable[[str], bool]
LAYOUTS = ("original .ckpt/.pt/.pth", "single-file .safetensors", "diffusers folder")
DIFFUSERS_WEIGHT_NAMES = {
    "unet": ("diffusion_pytorch_model",),
    "vae": ("diffusion_pytorch_model",),
    "image_encoder": ("model", "pytorch_model", "diffusion_pytorch_model"),
}


class CheckpointError(ValueError):
    """A file or folder that cannot be read as Paint by Example weights; says why and what works."""


@dataclass
class Weights:
    """The three models' state dicts in original key names, without their checkpoint prefixes."""

    unet: StateDict
    vae: StateDict
    encoder: StateDict
    layout: str


@dataclass
class Models:
    unet: UNet
    vae: AutoencoderKL
    encoder: ExemplarEncoder
    layout: str


# ---------------------------------------------------------------------------------------------
# Files


def _file_kind(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "zip-pickle"
    if head[:1] == b"\x80":
        return "legacy-pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    return "unknown"


def _is_torch_zip(path: Path) -> bool:
    """torch.save's zip files hold `<archive>/data.pkl`; other zips are not checkpoints."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return True  # damaged: let the reader report it as such


def _as_dtype(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is None or not tensor.is_floating_point() or tensor.dtype == dtype:
        return tensor
    return tensor.to(dtype)


SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}


def _read_safetensors(path: Path, dtype: torch.dtype | None, select: KeyFilter | None) -> StateDict:
    """A safetensors file, each tensor memory-mapped on its own, copy-on-write.

    A tensor already in `dtype` is the mapping itself: no copy, and its pages come in only when
    used. Another is cast from its mapping, which is then dropped, so a fp32 file loaded as bf16
    peaks at about the bf16 size. One mapping per tensor lets memory go back to the system as
    soon as a model lets its tensors go, whatever else the file holds.
    """
    with open(path, "rb") as handle:
        header_size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_size))
        header.pop("__metadata__", None)
        state = {}
        for key, info in header.items():
            if select is not None and not select(key):
                continue
            start, end = (8 + header_size + offset for offset in info["data_offsets"])
            if end == start:
                raw = torch.empty(0, dtype=torch.uint8)
            else:
                aligned = start - start % mmap.ALLOCATIONGRANULARITY
                mapping = mmap.mmap(handle.fileno(), end - aligned, access=mmap.ACCESS_COPY, offset=aligned)
                raw = torch.frombuffer(mapping, dtype=torch.uint8, count=end - start, offset=start - aligned)
            tensor = raw.view(SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])
            state[key] = _as_dtype(tensor, dtype)
    return state


def read_file(
    path: str | os.PathLike, dtype: torch.dtype | None = None, select: KeyFilter | None = None
) -> StateDict:
    """One weights file -> flat state dict of the keys `select` keeps (all by default), floating
    tensors cast to `dtype` one at a time (a cast never holds the whole file twice); tensors of
    a safetensors file already in `dtype` are memory-mapped, not copied. Never executes pickled
    code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file. Supported layouts: {', '.join(LAYOUTS)}.")
    kind = _file_kind(path)
    if kind == "zip-pickle" and not _is_torch_zip(path):
        raise CheckpointError(
            f"{path}: a plain zip archive, not a PyTorch checkpoint (no data.pkl inside). If it "
            "holds the model, unpack it and pass the .ckpt, .safetensors or folder it contains."
        )
    try:
        if kind == "safetensors":
            state = _read_safetensors(path, dtype, select)
        elif kind in ("zip-pickle", "legacy-pickle"):
            state = torch.load(
                path, map_location="cpu", weights_only=True, mmap=kind == "zip-pickle"
            )
        else:
            raise CheckpointError(
                f"{path}: not a weights file this pack reads (neither safetensors nor a PyTorch "
                f"checkpoint). Supported layouts: {', '.join(LAYOUTS)}."
            )
    except CheckpointError:
        raise
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refused to load: the pickle holds objects other than tensors, which could "
            f"run code ({str(error).splitlines()[0]}). Convert a trusted copy to .safetensors."
        ) from None
    except Exception as error:  # noqa: BLE001 - any reader failure here means a damaged file
        raise CheckpointError(
            f"{path}: the file is truncated or corrupted ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no detail'}). Download it again."
        ) from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: holds no flat dictionary of tensors.")
    return {
        key: _as_dtype(value, dtype) for key, value in state.items() if select is None or select(key)
    }


def _diffusers_file(folder: Path, component: str) -> Path | None:
    for stem in DIFFUSERS_WEIGHT_NAMES[component]:
        for suffix in (".safetensors", ".fp16.safetensors", ".bin", ".fp16.bin"):
            candidate = folder / component / (stem + suffix)
            if candidate.is_file():
                return candidate
    return None


# ---------------------------------------------------------------------------------------------
# Layouts -> Weights


def _describe_foreign(state: Mapping[str, torch.Tensor]) -> str:
    keys = list(state)
    if any(".text_model." in k or k.startswith("text_model.") for k in keys):
        return "it looks like a text-conditioned Stable Diffusion model (it has a CLIP text encoder)"
    if any(k.startswith("vision_model.") for k in keys):
        return "it looks like a plain CLIP vision model"
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "it has a Stable Diffusion UNet but not the exemplar encoder"
    return "none of its tensors belong to a Paint by Example model"


def weights_from_original(state: Mapping[str, torch.Tensor], source: str, prefer_ema: bool = False) -> Weights:
    required = (
        ("model.diffusion_model.", "UNet (model.diffusion_model.*)"),
        ("first_stage_model.", "VAE (first_stage_model.*)"),
        ("cond_stage_model.mapper.", "exemplar mapper (cond_stage_model.mapper.*)"),
        ("learnable_vector", "learned unconditional vector (learnable_vector)"),
    )
    missing = [what for prefix, what in required if not any(k.startswith(prefix) for k in state)]
    if missing:
        raise CheckpointError(
            f"{source}: not a Paint by Example model: {_describe_foreign(state)}. Missing: "
            f"{'; '.join(missing)}. Expected the released Paint-by-Example model.ckpt, a "
            f"single-file .safetensors converted from it, or its diffusers folder."
        )
    try:
        parts = keymaps.split_original(state, prefer_ema=prefer_ema)
    except ValueError as error:
        raise CheckpointError(f"{source}: {error}") from None
    return Weights(parts["unet"], parts["vae"], parts["encoder"], "original")


def weights_from_diffusers(folder: Path, dtype: torch.dtype | None = None) -> Weights:
    files = {name: _diffusers_file(folder, name) for name in DIFFUSERS_WEIGHT_NAMES}
    absent = [name for name, file in files.items() if file is None]
    if absent:
        raise CheckpointError(
            f"{folder}: a diffusers folder needs weights in {', '.join(n + '/' for n in absent)} "
            f"(diffusion_pytorch_model.safetensors or model.safetensors, or .bin)."
        )
    try:
        return Weights(
            unet=keymaps.unet_from_diffusers(read_file(files["unet"], dtype)),
            vae=keymaps.vae_from_diffusers(read_file(files["vae"], dtype)),
            encoder=keymaps.encoder_from_diffusers(read_file(files["image_encoder"], dtype)),
            layout="diffusers",
        )
    except (KeyError, ValueError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{folder}: not a Paint by Example diffusers folder: {error}") from None


def read_weights(
    path: str | os.PathLike, prefer_ema: bool = False, dtype: torch.dtype | None = None
) -> Weights:
    """Any supported layout -> Weights in original key names (floating tensors in `dtype`, if given)."""
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / "unet").is_dir() or (path / "model_index.json").is_file():
            return weights_from_diffusers(path, dtype)
        raise CheckpointError(
            f"{path}: a folder, but not a diffusers model folder (no unet/). "
            f"Supported layouts: {', '.join(LAYOUTS)}."
        )
    weights = weights_from_original(read_file(path, dtype), str(path), prefer_ema=prefer_ema)
    weights.layout = "single-file" if _file_kind(path) == "safetensors" else "original"
    return weights


# ---------------------------------------------------------------------------------------------
# Weights -> models


def _assign(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    expected = set(model.state_dict(keep_vars=True))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{what}: the weights do not fit the model inferred from them "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})."
        )
    model.load_state_dict(state, strict=True, assign=True)


def build_encoder(state: Mapping[str, torch.Tensor]) -> ExemplarEncoder:
    with torch.device("meta"):
        encoder = ExemplarEncoder(infer_encoder_config(state))
    # position_ids: an arange buffer that some transformers versions saved; the tower needs none.
    _assign(encoder, {k: v for k, v in state.items() if not k.endswith("embeddings.position_ids")},
            "exemplar encoder")
    return encoder


def build_models(weights: Weights, dtype: torch.dtype = torch.float32, device="cpu") -> Models:
    try:
        with torch.device("meta"):
            unet = UNet(infer_unet_config(weights.unet))
            vae = AutoencoderKL(infer_vae_config(weights.vae))
        _assign(unet, weights.unet, "UNet")
        _assign(vae, weights.vae, "VAE")
        encoder = build_encoder(weights.encoder)
    except ConfigError as error:
        raise CheckpointError(f"not a Paint by Example model: {error}") from None
    if unet.config.in_channels != 9:
        raise CheckpointError(
            f"the UNet takes {unet.config.in_channels} input channels; Paint by Example's takes 9 "
            f"(latent, masked-image latent, mask). This is another kind of model."
        )
    models = Models(unet, vae, encoder, weights.layout)
    for model in (unet, vae, encoder):
        model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return models


def load_models(path: str | os.PathLike, dtype: torch.dtype = torch.float32, device="cpu") -> Models:
    return build_models(read_weights(path, dtype=dtype), dtype=dtype, device=device)


# ---------------------------------------------------------------------------------------------
# Writing


def encoder_state_dict(encoder: ExemplarEncoder) -> StateDict:
    """The encoder's weights under canonical names (`transformer.vision_model.*`)."""
    return encoder.state_dict()


def weights_of(models: Models) -> Weights:
    return Weights(models.unet.state_dict(), models.vae.state_dict(), encoder_state_dict(models.encoder), models.layout)


def _cast(state: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> StateDict:
    """Tensors ready for writing: cast, contiguous, and owning their memory (safetensors refuses
    views that share it, such as q, k, v split from one fused weight)."""
    ready = {}
    for key, value in state.items():
        value = _as_dtype(value, dtype).contiguous()
        if value.untyped_storage().nbytes() != value.numel() * value.element_size():
            value = value.clone()
        ready[key] = value
    return ready


def save_single_file(weights: Weights, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """One `.safetensors` in the original key names, written atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    state = _cast(keymaps.join_original(weights.unet, weights.vae, weights.encoder), dtype)
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    return path


def save_original_ckpt(weights: Weights, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """A Lightning-style `.ckpt` (`{"state_dict": ...}`), as the reference releases it."""
    path = Path(path)
    state = _cast(keymaps.join_original(weights.unet, weights.vae, weights.encoder), dtype)
    atomic_write(path, lambda tmp: torch.save({"state_dict": state}, tmp))
    return path


def diffusers_configs(weights: Weights) -> dict[str, dict]:
    """The config.json of each diffusers component, for the sizes these weights have."""
    unet, vae, encoder = (
        infer_unet_config(weights.unet),
        infer_vae_config(weights.vae),
        infer_encoder_config(weights.encoder),
    )
    widths = [unet.model_channels * m for m in unet.channel_mult]
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in unet.attention_levels]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(unet.attention_levels)]
    clip = encoder.clip_config().to_dict()
    clip.update(architectures=["PaintByExampleImageEncoder"], projection_dim=encoder.context_dim)
    return {
        "unet": {
            "_class_name": "UNet2DConditionModel",
            "in_channels": unet.in_channels,
            "out_channels": unet.out_channels,
            "block_out_channels": widths,
            "down_block_types": down,
            "up_block_types": up,
            "layers_per_block": unet.num_res_blocks,
            "cross_attention_dim": unet.context_dim,
            "attention_head_dim": unet.num_heads,  # diffusers' SD 1.x name for the head count
            "transformer_layers_per_block": unet.transformer_depth,
            "sample_size": 64,
        },
        "vae": {
            "_class_name": "AutoencoderKL",
            "in_channels": vae.in_channels,
            "out_channels": vae.out_channels,
            "block_out_channels": [vae.base_channels * m for m in vae.channel_mult],
            "down_block_types": ["DownEncoderBlock2D"] * len(vae.channel_mult),
            "up_block_types": ["UpDecoderBlock2D"] * len(vae.channel_mult),
            "layers_per_block": vae.num_res_blocks,
            "latent_channels": vae.embed_dim,
            "scaling_factor": vae.scaling_factor,
            "sample_size": 512,
        },
        "image_encoder": clip,
    }


def save_diffusers(weights: Weights, folder: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """A diffusers folder (`unet/`, `vae/`, `image_encoder/`, configs) that diffusers loads too."""
    from safetensors.torch import save_file

    folder = Path(folder)
    configs = diffusers_configs(weights)
    parts = {
        "unet": keymaps.unet_to_diffusers(weights.unet),
        "vae": keymaps.vae_to_diffusers(weights.vae),
        "image_encoder": keymaps.encoder_to_diffusers(weights.encoder),
    }
    for component, state in parts.items():
        name = "model.safetensors" if component == "image_encoder" else "diffusion_pytorch_model.safetensors"
        state = _cast(state, dtype)
        atomic_write(folder / component / name, lambda tmp, s=state: save_file(s, tmp, metadata={"format": "pt"}))
        (folder / component / "config.json").write_text(json.dumps(configs[component], indent=2))
    size = infer_encoder_config(weights.encoder).image_size
    extras = {
        "scheduler/scheduler_config.json": {
            "_class_name": "PNDMScheduler",
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "num_train_timesteps": 1000,
            "skip_prk_steps": True,
            "clip_sample": False,
            "set_alpha_to_one": False,
            "steps_offset": 1,
        },
        "feature_extractor/preprocessor_config.json": {
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": True,
            "size": {"shortest_edge": size},
            "resample": 3,
            "do_center_crop": True,
            "crop_size": {"height": size, "width": size},
            "do_normalize": True,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "do_convert_rgb": True,
        },
        "model_index.json": {
            "_class_name": "PaintByExamplePipeline",
            "feature_extractor": ["transformers", "CLIPImageProcessor"],
            "image_encoder": ["paint_by_example", "PaintByExampleImageEncoder"],
            "requires_safety_checker": False,
            "safety_checker": [None, None],
            "scheduler": ["diffusers", "PNDMScheduler"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        },
    }
    for relative, content in extras.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(json.dumps(content, indent=2))
    return folder
