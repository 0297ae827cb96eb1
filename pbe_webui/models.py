"""Paint by Example weights and LoRA files in the webui's models folders: listing (by a header
check, never a load), choosing, loading.

Models: models/PaintByExample/ (files and diffusers folders). LoRAs: models/PaintByExample/lora/
and the webui's own LoRA folder (models/Lora), of which only Paint by Example LoRAs are listed.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from modules import paths, shared
from modules.shared import opts

from pbe_core.checkpoint import CheckpointError, load_models
from pbe_core.pipeline import PaintByExample
from pbe_core.sniff import lora_problem, paint_by_example_problem

from .errors import PaintByExampleError

MODELS_DIR = Path(paths.models_path) / "PaintByExample"
LORA_DIR = MODELS_DIR / "lora"
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")
NO_LORA = "None"

_checked: dict[tuple, str | None] = {}  # (path, size, mtime, kind) -> why it is left out


def is_diffusers_folder(folder: Path) -> bool:
    return (folder / "unet").is_dir() or (folder / "model_index.json").is_file()


def candidates(root: Path, folders: bool) -> list[Path]:
    """Weight files (and diffusers folders when `folders`) under `root`."""
    found = []
    for folder, subfolders, files in os.walk(root, followlinks=True):
        here = Path(folder)
        if folders and here != root and is_diffusers_folder(here):
            found.append(here)
            subfolders.clear()
            continue
        if here == LORA_DIR and folders:  # LoRAs are listed as LoRAs
            subfolders.clear()
            continue
        found += [here / name for name in files if name.lower().endswith(WEIGHT_SUFFIXES)]
    return found


def problem(path: Path, kind: str) -> str | None:
    """Why `path` is no Paint by Example model (kind "model") or LoRA; cached per file version."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, kind)
    if key not in _checked:
        _checked[key] = (paint_by_example_problem if kind == "model" else lora_problem)(path)
    return _checked[key]


def scan_models(root: Path = MODELS_DIR) -> tuple[list[str], dict[str, str]]:
    """(Paint by Example models, {left-out name: why}), names relative to `root`."""
    root.mkdir(parents=True, exist_ok=True)
    listed, left_out = [], {}
    for path in candidates(root, folders=True):
        name = path.relative_to(root).as_posix()
        why = problem(path, "model")
        if why is None:
            listed.append(name)
        else:
            left_out[name] = why
    return sorted(listed, key=str.lower), left_out


def list_models() -> list[str]:
    return scan_models()[0]


def default_model() -> str | None:
    models = list_models()
    return models[0] if models else None


def left_out_note(left_out: dict[str, str]) -> str:
    if not left_out:
        return ""
    reasons = "; ".join(f"{name}: {why}" for name, why in sorted(left_out.items()))
    return f"Left out (not Paint by Example models): {reasons}."


def resolve_model(name: str | None) -> Path:
    """A listed model's path; only listed names are accepted, so no path leaves the folder."""
    if not name:
        raise PaintByExampleError(
            f"No Paint by Example model chosen. Put the released model.ckpt "
            f"(Fantasy-Studio/Paint-by-Example), a .safetensors converted from it or its diffusers "
            f"folder into {MODELS_DIR}, then press the refresh button next to 'Model'."
        )
    available, left_out = scan_models()
    if name in left_out:
        raise PaintByExampleError(
            f"Model {name!r} is not a Paint by Example model ({left_out[name]}); "
            f"available: {', '.join(available) or 'none'}."
        )
    if name not in available:
        raise PaintByExampleError(
            f"Model {name!r} is not in {MODELS_DIR}; available: {', '.join(available) or 'none'}."
        )
    return MODELS_DIR / name


def lora_roots() -> dict[str, Path]:
    """Where LoRAs are looked for, by the prefix their names get in the list."""
    roots = {"": LORA_DIR}
    webui_loras = getattr(shared.cmd_opts, "lora_dir", None) or Path(paths.models_path) / "Lora"
    if Path(webui_loras).resolve() != LORA_DIR.resolve():
        roots["Lora/"] = Path(webui_loras)
    return roots


def scan_loras() -> tuple[dict[str, Path], dict[str, str]]:
    """({listed name: path}, {left-out name: why}) of the LoRA folders."""
    LORA_DIR.mkdir(parents=True, exist_ok=True)
    listed, left_out = {}, {}
    for prefix, root in lora_roots().items():
        if not root.is_dir():
            continue
        for path in candidates(root, folders=False):
            name = prefix + path.relative_to(root).as_posix()
            why = problem(path, "lora")
            if why is None:
                listed[name] = path
            elif not prefix:  # the webui's own LoRAs are for its models: not worth a word
                left_out[name] = why
    return listed, left_out


def list_loras() -> list[str]:
    return [NO_LORA, *sorted(scan_loras()[0], key=str.lower)]


def resolve_lora(name) -> Path | None:
    """A listed LoRA's path, None for no LoRA; only listed names are accepted."""
    if name is None or str(name).strip() in ("", NO_LORA):
        return None
    listed, left_out = scan_loras()
    if name in left_out:
        raise PaintByExampleError(f"LoRA {name!r} is not a Paint by Example LoRA ({left_out[name]}).")
    if name not in listed:
        raise PaintByExampleError(
            f"LoRA {name!r} is not in {LORA_DIR} or the webui's LoRA folder; available: "
            f"{', '.join(sorted(listed)) or 'none'}."
        )
    return listed[name]


_loaded: dict[tuple, PaintByExample] = {}  # at most one entry: the model used last


def version(path: Path | None) -> tuple:
    return () if path is None else (str(path), path.stat().st_mtime_ns)


def load_pipeline(
    path: Path, dtype: torch.dtype, lora: Path | None = None, lora_strength: float = 1.0
) -> PaintByExample:
    """The cached pipeline for this model, LoRA and dtype, kept on the CPU until a run moves it.
    A LoRA is merged into the weights, so another LoRA or strength reads the model again."""
    key = (version(path), dtype, version(lora), lora_strength if lora else None)
    if key not in _loaded:
        _loaded.clear()  # free the previous model before reading the next
        try:
            models = load_models(path, dtype=dtype)
            if lora is not None:
                from pbe_core.train.lora import apply_lora

                apply_lora(models, lora, strength=lora_strength)
        except CheckpointError as error:
            raise PaintByExampleError(str(error)) from None
        _loaded[key] = PaintByExample(models, device="cpu", dtype=dtype)
    return _loaded[key]


def file_hash(path: Path, title: str) -> str | None:
    """The webui's cached sha256 (short form) of a file; None for folders or when off."""
    if path.is_dir() or not opts.add_model_hash_to_info:
        return None
    from modules import hashes

    sha256 = hashes.sha256(str(path), title)
    return sha256[:10] if sha256 else None


def model_hash(path: Path, name: str) -> str | None:
    return file_hash(path, f"paint_by_example/{name}")
