"""The edit as a webui job: checks the values, runs batch count x batch size edits on the
chosen device with the webui's progress and interruption, saves them, returns `Processed`.

The webui's Stable Diffusion model is never loaded, swapped or used (the webui would build a
Paint by Example checkpoint as a text-conditioned inpainting model), so the script works with no
checkpoint at all; that model is only moved off the GPU while memory is short.
Seed (-1: random) -> image i of the job uses seed + i.
"""

from __future__ import annotations

import torch
from modules import devices, images, processing
from modules.shared import opts, state

from pbe_core.pipeline import Interrupted, PaintByExample

from . import inputs
from .devices import memory_is_short, move_webui_model_off_gpu, target_device, target_dtype
from .errors import PaintByExampleError
from .infotext import record_parameters
from .models import load_pipeline, resolve_model


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


def run(
    p,
    exemplar,
    model_name,
    sampler,
    crop_context,
    exemplar_mode,
    negative_exemplar,
    negative_weight,
) -> processing.Processed:
    sampler = inputs.choice(sampler, "sampler", inputs.SAMPLERS)
    exemplar_mode = inputs.choice(exemplar_mode, "exemplar mode", inputs.EXEMPLAR_MODES)
    crop_context = inputs.number(crop_context, "crop context", *inputs.CROP_CONTEXT_RANGE)
    image, mask = inputs.source_and_mask(p)
    exemplar = inputs.read_picture(exemplar, "exemplar")
    if exemplar is None:
        raise PaintByExampleError("No exemplar: add the picture of the object to paint in.")
    exemplar, exemplar_mask = inputs.split_alpha(exemplar)
    negative = inputs.read_picture(negative_exemplar, "negative exemplar")
    negative_weight = (
        inputs.number(negative_weight, "negative exemplar weight", 0.0, 1.0)
        if negative is not None
        else None
    )
    path = resolve_model(model_name)

    area = inputs.area_options(p, mask, crop_context)
    options = area | {
        "steps": int(p.steps),
        "guidance": float(p.cfg_scale),
        "sampler": inputs.SAMPLERS[sampler][0],
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
