"""Where Paint by Example weights live in ComfyUI: models/paint_by_example and models/checkpoints."""

from __future__ import annotations

import os

import folder_paths

MODEL_FOLDER = "paint_by_example"
WEIGHT_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors", ".bin")


def register_model_folder() -> None:
    """models/paint_by_example, after any paths extra_model_paths.yaml gave that name."""
    default = os.path.join(folder_paths.models_dir, MODEL_FOLDER)
    folder_paths.add_model_folder_path(MODEL_FOLDER, default)
    os.makedirs(default, exist_ok=True)


def _is_diffusers_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "model_index.json")) or os.path.isdir(
        os.path.join(path, "unet")
    )


def _diffusers_folders(root: str) -> list[str]:
    """Diffusers model folders one or two levels below root, as paths relative to root."""
    found = []
    for child in sorted(os.listdir(root)):
        path = os.path.join(root, child)
        if not os.path.isdir(path):
            continue
        if _is_diffusers_folder(path):
            found.append(child)
            continue
        found.extend(
            f"{child}/{grandchild}"
            for grandchild in sorted(os.listdir(path))
            if _is_diffusers_folder(os.path.join(path, grandchild))
        )
    return found


def model_choices() -> list[str]:
    """Weight files in models/paint_by_example and models/checkpoints, and diffusers folders in
    models/paint_by_example (files inside those folders are not listed one by one)."""
    folders = []
    for root in folder_paths.get_folder_paths(MODEL_FOLDER):
        if os.path.isdir(root):
            folders.extend(_diffusers_folders(root))
    files = [
        name
        for folder_name in (MODEL_FOLDER, "checkpoints")
        for name in folder_paths.get_filename_list(folder_name)
        if name.lower().endswith(WEIGHT_SUFFIXES)
        and not any(name.replace(os.sep, "/").startswith(f + "/") for f in folders)
    ]
    return sorted(set(folders)) + sorted(set(files))


def resolve_model(name: str) -> str:
    for root in folder_paths.get_folder_paths(MODEL_FOLDER):
        candidate = os.path.join(root, name)
        if os.path.isdir(candidate) and _is_diffusers_folder(candidate):
            return candidate
    for folder_name in (MODEL_FOLDER, "checkpoints"):
        path = folder_paths.get_full_path(folder_name, name)
        if path is not None:
            return path
    raise FileNotFoundError(
        f"ckpt_name: '{name}' is neither in models/{MODEL_FOLDER} nor in models/checkpoints. "
        "Put the Paint by Example weights there (any .ckpt, .safetensors or diffusers folder) "
        "and refresh."
    )
