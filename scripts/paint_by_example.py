"""AUTOMATIC1111 webui / Forge: "Paint by Example" in the img2img tab's Scripts list.

`run()` performs the whole edit with pbe_core's pipeline and returns its own `Processed`: the
webui's Stable Diffusion model is never loaded, swapped or used (the webui would build a Paint by
Example checkpoint as a text-conditioned inpainting model), so the script works with no
checkpoint at all. The webui's model is only moved off the GPU while memory is short.

How the tab's settings map onto `PaintByExample.edit`:
- image: `init_images[0]`, flattened onto the img2img background colour as the webui does;
  mask: `image_mask` binarised as the webui does (alpha > 128 for a mask with transparency,
  else grey >= 128; white = edit), inverted for "Inpaint not masked".
- "Only masked": region "auto" on the full-size image. The crop box is the mask's box scaled by
  "Crop context" and grown by the "Only masked padding" on each side: context = crop context
  + 2 * padding / (longer side of the mask's box). Working size: longer side max(width, height).
- "Whole picture": image and mask resized to width x height by the tab's resize mode (the webui's
  `images.resize_image`; "latent upscale" resizes as "Just resize"), region "full".
- Mask blur b -> feather int(2.5 * b + 0.5), the reach of the webui's own Gaussian mask blur.
- Seed (-1: random) -> image i of the job uses seed + i; sampling steps; CFG scale -> guidance;
  batch count x batch size images.
Unused: the prompts, denoising strength, masked content and the webui's sampler choice.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path

import gradio as gr
import torch
from fastapi import HTTPException
from modules import devices, images, paths, processing, scripts, shared
from modules.shared import opts, state
from PIL import Image, ImageOps, UnidentifiedImageError

EXTENSION_ROOT = Path(__file__).resolve().parents[1]
if str(EXTENSION_ROOT) not in sys.path:
    sys.path.append(str(EXTENSION_ROOT))  # appended, so the folder's other names shadow nothing

from pbe_core.checkpoint import CheckpointError, load_models  # noqa: E402
from pbe_core.pipeline import Interrupted, PaintByExample  # noqa: E402

TITLE = "Paint by Example"
MODELS_DIR = Path(paths.models_path) / "PaintByExample"
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")
# UI name -> (pbe_core sampler, the webui's own sampler name and schedule type, for the infotext)
SAMPLERS = {
    "PLMS": ("plms", "PLMS", None),
    "DDIM": ("ddim", "DDIM", None),
    "Euler": ("euler", "Euler", None),
    "Euler a": ("euler_a", "Euler a", None),
    "DPM++ 2M Karras": ("dpmpp_2m", "DPM++ 2M", "Karras"),
}
EXEMPLAR_MODES = ("squash", "crop", "pad")
CROP_CONTEXT_RANGE = (1.0, 4.0)  # the mask box scaled by 1x to 4x
GPU_WORKSPACE_BYTES = 3 * 2**30  # activations of a 512 px fp16 edit, with room to spare
LATENT_UPSCALE = 3  # the webui's resize mode "Just resize (latent upscale)"


class PaintByExampleError(HTTPException):
    """A mistake the user can fix: HTTP 400 with the message over the API, the message in the UI."""

    def __init__(self, message: str):
        super().__init__(status_code=400, detail=message)

    def __str__(self) -> str:
        return self.detail


# ---------------------------------------------------------------------------------------------
# Models


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


# ---------------------------------------------------------------------------------------------
# Device and memory


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


# ---------------------------------------------------------------------------------------------
# Inputs


def read_picture(value, name: str) -> Image.Image | None:
    """A PIL image from the UI, or base64 text (optionally a data: URI) from the API."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, Image.Image):
        return value
    if not isinstance(value, str):
        raise PaintByExampleError(
            f"{name}: expected an image or base64 text, got {type(value).__name__}."
        )
    text = "".join(value.split())
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        picture = Image.open(io.BytesIO(base64.b64decode(text, validate=True)))
        picture.load()
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as error:
        raise PaintByExampleError(
            f"{name}: not a base64-encoded image ({error}). Send the PNG or JPEG file's bytes in "
            f"base64, optionally as a data:image/png;base64,... URI."
        ) from None
    return ImageOps.exif_transpose(picture)


def split_alpha(picture: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """The exemplar in RGB, and its alpha as the object mask when it has transparency."""
    if picture.mode in ("RGBA", "LA") or "transparency" in picture.info:
        rgba = picture.convert("RGBA")
        alpha = rgba.getchannel("A")
        if alpha.getextrema()[0] < 255:
            return rgba.convert("RGB"), alpha
    return picture.convert("RGB"), None


def binary_edit_mask(mask: Image.Image, invert: bool) -> Image.Image:
    """The webui's binarisation: alpha > 128 where the mask has transparency, else grey >= 128
    (its latent mask rounds at one half). White = edit; `invert` for "Inpaint not masked"."""
    if mask.mode == "RGBA" and mask.getextrema()[-1] != (255, 255):
        binary = mask.getchannel("A").point(lambda value: 255 if value > 128 else 0)
    else:
        binary = mask.convert("L").point(lambda value: 255 if value >= 128 else 0)
    return ImageOps.invert(binary) if invert else binary


def number(value, name: str, low: float, high: float) -> float:
    try:
        result = float(value)
    except (TypeError, ValueError):
        result = float("nan")
    if not low <= result <= high:
        raise PaintByExampleError(f"{name} must be a number from {low} to {high}; got {value!r}.")
    return result


def choice(value, name: str, options) -> str:
    for option in options:
        if str(value).strip().lower() == option.lower():
            return option
    raise PaintByExampleError(f"{name} {value!r} is not one of: {', '.join(options)}.")


def source_and_mask(p) -> tuple[Image.Image, Image.Image]:
    """The image and binary edit mask the edit works on, at the size the tab's area mode needs."""
    if not p.init_images:
        raise PaintByExampleError("No image: upload the picture to edit in the Inpaint tab.")
    if len(p.init_images) > 1:
        raise PaintByExampleError(
            f"Paint by Example edits one image at a time; got {len(p.init_images)} init images "
            f"(use the Batch tab for many)."
        )
    if p.image_mask is None:
        raise PaintByExampleError(
            "No mask: paint over the region to replace in the Inpaint tab (over the API, send "
            "`mask` with white where the exemplar's object goes)."
        )
    image = images.flatten(p.init_images[0], opts.img2img_background_color)
    mask = binary_edit_mask(p.image_mask, bool(p.inpainting_mask_invert))
    if mask.getbbox() is None:
        inverted = (
            " (with 'Inpaint not masked' the painted area is kept)"
            if p.inpainting_mask_invert
            else ""
        )
        raise PaintByExampleError(f"The mask is empty: paint over the region to replace{inverted}.")
    if not p.inpaint_full_res:
        mode = 0 if p.resize_mode == LATENT_UPSCALE else p.resize_mode
        image = images.resize_image(mode, image, p.width, p.height)
        mask = images.resize_image(mode, mask, p.width, p.height)
    return image, mask


def area_options(p, mask: Image.Image, crop_context: float) -> dict:
    """The tab's area settings as `edit` options (see the module docstring)."""
    blur = max(p.mask_blur_x, p.mask_blur_y)
    options = {"feather": int(2.5 * blur + 0.5) if blur > 0 else 0}
    if not p.inpaint_full_res:
        return options | {"region": "full"}
    x0, y0, x1, y1 = mask.getbbox()
    padding = max(int(p.inpaint_full_res_padding), 0)
    return options | {
        "region": "auto",
        "context": crop_context + 2 * padding / max(x1 - x0, y1 - y0),
        "resolution": max(p.width, p.height),
    }


# ---------------------------------------------------------------------------------------------
# Infotext


def record_parameters(
    p,
    model_name: str,
    path: Path,
    sampler: str,
    area: dict,
    crop_context: float,
    exemplar_mode: str,
    negative_weight: float | None,
) -> None:
    """What the edit uses, so PNG Info shows it and pasting it restores the tab and the script."""
    _, p.sampler_name, p.scheduler = SAMPLERS[sampler]
    p.subseed_strength = 0  # variation seeds, seed resizing and image CFG are not used
    p.image_cfg_scale = None
    p.seed_resize_from_w = p.seed_resize_from_h = 0
    count = p.n_iter * p.batch_size
    p.all_prompts = [p.prompt] * count
    p.all_negative_prompts = [p.negative_prompt] * count
    p.all_subseeds = [-1] * count
    used = {
        "Script": TITLE,
        "PbE model": model_name,
        "PbE model hash": model_hash(path, model_name),
        "PbE sampler": sampler,
        "PbE exemplar mode": exemplar_mode,
        "PbE crop context": crop_context if area["region"] == "auto" else None,
        "PbE negative exemplar weight": negative_weight,
        "Mask blur": p.mask_blur if area["feather"] else None,
        "Mask mode": "Inpaint not masked" if p.inpainting_mask_invert else None,
        "Inpaint area": "Only masked" if area["region"] == "auto" else None,
        "Masked area padding": p.inpaint_full_res_padding if area["region"] == "auto" else None,
    }
    p.extra_generation_params.update(
        {key: value for key, value in used.items() if value is not None}
    )


# ---------------------------------------------------------------------------------------------
# The job


def stop_requested() -> bool:
    return bool(state.interrupted or state.skipped)


def show_progress(step: int, total: int, _x0: torch.Tensor) -> None:
    state.sampling_step = step + 1


def generate(p, pipe: PaintByExample, image, mask, exemplar, options: dict) -> tuple[list, list]:
    """batch count x batch size edits, saved when the user saves samples: (images, infotexts)."""
    pictures, infotexts = [], []
    state.job_count = p.n_iter
    state.sampling_steps = p.steps
    for iteration in range(p.n_iter):
        if state.interrupted:
            break
        first = iteration * p.batch_size
        state.textinfo = f"Paint by Example {iteration + 1}/{p.n_iter}"
        try:
            batch = pipe.edit(
                image,
                mask,
                exemplar,
                seed=p.all_seeds[first],
                batch_size=p.batch_size,
                callback=show_progress,
                should_stop=stop_requested,
                **options,
            )
        except Interrupted:
            if not state.skipped:
                break
            state.skipped = False
            state.nextjob()
            continue
        except ValueError as error:
            raise PaintByExampleError(f"Paint by Example: {error}") from None
        for position, picture in enumerate(batch):
            infotext = processing.create_infotext(
                p,
                p.all_prompts,
                p.all_seeds,
                p.all_subseeds,
                iteration=iteration,
                position_in_batch=position,
                all_negative_prompts=p.all_negative_prompts,
            )
            if p.save_samples():
                images.save_image(
                    picture,
                    p.outpath_samples,
                    "",
                    p.all_seeds[first + position],
                    p.prompt,
                    opts.samples_format,
                    info=infotext,
                    p=p,
                )
            pictures.append(picture)
            infotexts.append(infotext)
        state.nextjob()
    return pictures, infotexts


class Script(scripts.Script):
    def title(self):
        return TITLE

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        # Called again for every API runner: builds fresh components and keeps no other state.
        models = list_models()
        with gr.Group():
            with gr.Row():
                exemplar = gr.Image(
                    label="Exemplar (transparent background: cut-out object)",
                    type="pil",
                    image_mode="RGBA",
                    height=256,
                    elem_id=self.elem_id("exemplar"),
                )
                with gr.Column():
                    with gr.Row():
                        model = gr.Dropdown(
                            label="Model",
                            choices=models,
                            value=models[0] if models else None,
                            elem_id=self.elem_id("model"),
                        )
                        add_refresh_button(model, self.elem_id("model_refresh"))
                    sampler = gr.Dropdown(
                        label="Sampler",
                        choices=list(SAMPLERS),
                        value="PLMS",
                        elem_id=self.elem_id("sampler"),
                    )
                    crop_context = gr.Slider(
                        label="Crop context (only masked)",
                        minimum=CROP_CONTEXT_RANGE[0],
                        maximum=CROP_CONTEXT_RANGE[1],
                        step=0.1,
                        value=1.5,
                        elem_id=self.elem_id("crop_context"),
                    )
                    exemplar_mode = gr.Radio(
                        label="Exemplar fit",
                        choices=list(EXEMPLAR_MODES),
                        value="squash",
                        elem_id=self.elem_id("exemplar_mode"),
                    )
            with gr.Accordion("Negative exemplar", open=False):
                with gr.Row():
                    negative_exemplar = gr.Image(
                        label="Negative exemplar",
                        type="pil",
                        image_mode="RGB",
                        height=192,
                        elem_id=self.elem_id("negative_exemplar"),
                    )
                    negative_weight = gr.Slider(
                        label="Negative exemplar weight",
                        minimum=0.0,
                        maximum=1.0,
                        step=0.05,
                        value=1.0,
                        elem_id=self.elem_id("negative_weight"),
                    )
        self.infotext_fields = [
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

    def run(
        self,
        p,
        exemplar,
        model_name,
        sampler,
        crop_context,
        exemplar_mode,
        negative_exemplar,
        negative_weight,
    ):
        sampler = choice(sampler, "sampler", SAMPLERS)
        exemplar_mode = choice(exemplar_mode, "exemplar mode", EXEMPLAR_MODES)
        crop_context = number(crop_context, "crop context", *CROP_CONTEXT_RANGE)
        image, mask = source_and_mask(p)
        exemplar = read_picture(exemplar, "exemplar")
        if exemplar is None:
            raise PaintByExampleError("No exemplar: add the picture of the object to paint in.")
        exemplar, exemplar_mask = split_alpha(exemplar)
        negative = read_picture(negative_exemplar, "negative exemplar")
        negative_weight = (
            number(negative_weight, "negative exemplar weight", 0.0, 1.0)
            if negative is not None
            else None
        )
        path = resolve_model(model_name)

        area = area_options(p, mask, crop_context)
        options = area | {
            "steps": int(p.steps),
            "guidance": float(p.cfg_scale),
            "sampler": SAMPLERS[sampler][0],
            "exemplar_mode": exemplar_mode,
            "exemplar_mask": exemplar_mask,
        }
        if negative is not None:
            options |= {
                "negative_exemplar": negative.convert("RGB"),
                "negative_weight": negative_weight,
            }
        base_seed = int(processing.get_fixed_seed(p.seed))
        p.seed = base_seed
        p.all_seeds = [base_seed + i for i in range(p.n_iter * p.batch_size)]
        record_parameters(
            p, model_name, path, sampler, area, crop_context, exemplar_mode, negative_weight
        )

        device = target_device()
        pipe = load_pipeline(path, target_dtype(device))
        short = memory_is_short(pipe, device)
        restore = move_webui_model_off_gpu() if short else None
        try:
            pipe.to(device)
            pictures, infotexts = generate(p, pipe, image, mask, exemplar, options)
        finally:
            if short:  # give the GPU back to the webui
                pipe.to("cpu")
                devices.torch_gc()
                if restore is not None:
                    restore()
        return processing.Processed(
            p, pictures, seed=base_seed, info=infotexts[0] if infotexts else "", infotexts=infotexts
        )


def add_refresh_button(dropdown, elem_id: str) -> None:
    try:
        from modules.ui_common import create_refresh_button
    except ImportError:  # a webui without it: the list refreshes when the UI reloads
        return
    create_refresh_button(dropdown, lambda: None, lambda: {"choices": list_models()}, elem_id)
