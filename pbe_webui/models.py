"""Paint by Example weights in the webui's models folder: listing, choosing, loading."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from modules import paths
from modules.shared import opts

from pbe_core.checkpoint import CheckpointError, load_models
from pbe_core.pipeline import PaintByExample

from .errors import PaintByExampleError

MODELS_DIR = Path(paths.models_path) / "PaintByExample"
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")


def is_diffusers_folder(folder: Path) -> bool:
    return (folder / "unet").is_dir() or (folder / "model_index.json").is_file()


def list_models(root: Path = MODELS_DIR) -> list[str]:
    """Weight files and diffusers folders under the models folder, relative to it."""
    root.mkdir(parents=True, exist_ok=True)
    found = []
    for folder, subfolders, files in os.walk(root, followlinks=True):
        here = Path(folder)
        if here != root and is_diffusers_folder(here):
            found.append(here.relative_to(root).as_posix())
            subfolders.clear()
            continue
        found += [
            (here / name).relative_to(root).as_posix()
            for name in files
            if name.lower().endswith(WEIGHT_SUFFIXES)
        ]
    return sorted(found, key=str.lower)


def resolve_model(name: str | None) -> Path:
    """A listed model's path; only listed names are accepted, so no path leaves the folder."""
    if not name:
        raise PaintByExampleError(
            f"No Paint by Example model chosen. Put the released model.ckpt "
            f"(Fantasy-Studio/Paint-by-Example), a .safetensors converted from it or its diffusers "
            f"folder into {MODELS_DIR}, then press the refresh button next to 'Model'."
        )
    available = list_models()
    if name not in available:
        raise PaintByExampleError(
            f"Model {name!r} is not in {MODELS_DIR}; available: {', '.join(available) or 'none'}."
        )
    return MODELS_DIR / name


_loaded: dict[tuple, PaintByExample] = {}  # at most one entry: the model used last


def load_pipeline(path: Path, dtype: torch.dtype) -> PaintByExample:
    """The cached pipeline for this file and dtype, kept on the CPU until a run moves it."""
    key = (str(path), path.stat().st_mtime_ns, dtype)
    if key not in _loaded:
        _loaded.clear()  # free the previous model before reading the next
        try:
            models = load_models(path, dtype=dtype)
        except CheckpointError as error:
            raise PaintByExampleError(str(error)) from None
        _loaded[key] = PaintByExample(models, device="cpu", dtype=dtype)
    return _loaded[key]


def model_hash(path: Path, name: str) -> str | None:
    """The webui's cached sha256 (short form) of a model file; None for folders or when off."""
    if path.is_dir() or not opts.add_model_hash_to_info:
        return None
    from modules import hashes

    sha256 = hashes.sha256(str(path), f"paint_by_example/{name}")
    return sha256[:10] if sha256 else None
