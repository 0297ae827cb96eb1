"""What a weights file or folder holds, told from its header alone: for model lists that must
stay fast with many multi-gigabyte files. Nothing is loaded and nothing is unpickled: a
safetensors header is JSON, and a PyTorch pickle keeps its dictionary keys as plain text.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

from .checkpoint import _describe_foreign, _file_kind

# Key prefixes a whole Paint by Example checkpoint in the original layout has (see
# weights_from_original); a Paint by Example LoRA has the encoder's but not the UNet's or VAE's.
PBE_MARKERS = (
    "model.diffusion_model.", "first_stage_model.", "cond_stage_model.mapper.", "learnable_vector",
)
LORA_METADATA_KEY = "pbe_lora"  # pbe_core.train.lora's description of the file
PICKLE_SCAN_BYTES = 16 * 2**20  # a legacy pickle's dictionary comes before its tensor data
KEY_TEXT = re.compile(rb"[A-Za-z_][\w.]{2,200}")
MAX_HEADER_BYTES = 100 * 2**20


def safetensors_header(path: Path) -> dict:
    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        if not 0 < size <= MAX_HEADER_BYTES:
            raise ValueError("implausible safetensors header size")
        header = json.loads(handle.read(size))
    if not isinstance(header, dict):
        raise ValueError("a safetensors header is a JSON object")
    return header


def safetensors_keys(path: Path) -> list[str]:
    return [key for key in safetensors_header(path) if key != "__metadata__"]


def pickle_key_text(path: Path, kind: str) -> list[str]:
    """The strings in a PyTorch checkpoint's pickle, read as bytes (never unpickled)."""
    if kind == "zip-pickle":
        with zipfile.ZipFile(path) as archive:
            [member] = [name for name in archive.namelist() if name.endswith("data.pkl")][:1]
            data = archive.read(member)
    else:
        with open(path, "rb") as handle:
            data = handle.read(PICKLE_SCAN_BYTES)
    return [match.decode() for match in KEY_TEXT.findall(data)]


def diffusers_problem(folder: Path) -> str | None:
    index = folder / "model_index.json"
    if index.is_file():
        try:
            name = json.loads(index.read_text()).get("_class_name")
        except (OSError, ValueError, AttributeError):
            return "its model_index.json is not readable JSON"
        return None if name == "PaintByExamplePipeline" else f"a diffusers {name} folder"
    if not (folder / "image_encoder").is_dir():
        return "a diffusers folder without image_encoder/ (no exemplar encoder)"
    return None


def paint_by_example_problem(path: str | os.PathLike) -> str | None:
    """None when `path` looks like Paint by Example weights; else why not, in a few words."""
    path = Path(path)
    if path.is_dir():
        return diffusers_problem(path)
    try:
        kind = _file_kind(path)
        if kind == "safetensors":
            keys = safetensors_keys(path)
        elif kind in ("zip-pickle", "legacy-pickle"):
            keys = pickle_key_text(path, kind)
        else:
            return "neither a safetensors nor a PyTorch file"
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return "unreadable: truncated or damaged"
    if all(any(key.startswith(marker) for key in keys) for marker in PBE_MARKERS):
        return None
    if any("lora" in key.lower() for key in keys):
        return "a LoRA, not a full model"
    return _describe_foreign(dict.fromkeys(keys))


def lora_problem(path: str | os.PathLike) -> str | None:
    """None when `path` is a Paint by Example LoRA (pbe_core.train.lora's safetensors file);
    else why not, in a few words."""
    try:
        header = safetensors_header(Path(path)) if _file_kind(Path(path)) == "safetensors" else None
    except (OSError, ValueError):
        return "unreadable: truncated or damaged"
    if header is None:
        return "not a safetensors file"
    if LORA_METADATA_KEY in (header.get("__metadata__") or {}):
        return None
    keys = [key for key in header if key != "__metadata__"]
    if any(key.startswith(("lora_te", "lora_unet_", "text_encoder.")) for key in keys):
        return "a LoRA for a text-conditioned Stable Diffusion model"
    if any(".lora_down." in key for key in keys):
        return "a LoRA without the Paint by Example description"
    return "no LoRA"
