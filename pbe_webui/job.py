"""The edit as a webui job: checks the values, runs batch count x batch size edits on the
chosen device with the webui's progress, live preview and interruption, saves them, returns
`Processed`.

The webui's Stable Diffusion model is never loaded, swapped or used (the webui would build a
Paint by Example checkpoint as a text-conditioned inpainting model), so the script works with no
checkpoint at all; that model is only moved off the GPU while memory is short.
Seed (-1: random) -> image i of the job uses seed + i.

A mistake the user can fix is an HTTP 400 over the API; in the UI it is the job's message,
without the webui's error prefix and traceback.
"""

from __future__ import annotations

from modules import devices, images, processing
from modules.shared import opts, state

from pbe_core import prepare
from pbe_core.pipeline import Interrupted, PaintByExample

from . import inputs, preview
from .devices import memory_is_short, move_webui_model_off_gpu, target_device, target_dtype
from .errors import PaintByExampleError
from .infotext import infotext, used_parameters
from .models import load_pipeline, model_hash, resolve_lora, resolve_model


def stop_requested() -> bool:
    return bool(state.interrupted or state.skipped)


def generate(p, pipe: PaintByExample, image, mask, exemplar, options: dict, used: dict):
    """batch count x batch size edits, saved when the user saves samples:
    (images, infotexts, jobs finished, jobs). With "best of N" each image is its own job:
    the pipeline ranks one input's candidates."""
    best_of = options["candidates"]
    per_job = 1 if best_of > 1 else p.batch_size
    jobs = p.n_iter * p.batch_size // per_job
    pictures, infotexts = [], []
    state.job_count = jobs
    state.sampling_steps = p.steps
    finished = 0
    for job_index in range(jobs):
        if state.interrupted:
            break
        first = job_index * per_job
        state.textinfo = f"Paint by Example {job_index + 1}/{jobs}"
        try:
            result = pipe.run(
                image,
                mask,
                exemplar,
                seed=p.all_seeds[first],
                batch_size=per_job,
                callback=preview.step_callback(pipe),
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
        kept = result.images[:1] if best_of > 1 else result.images
        for position, pixels in enumerate(kept):
            seed = p.all_seeds[first + position]
            ranking = (
                {"PbE best seed": result.seeds[0], "PbE score": f"{float(result.scores[0]):.2f}"}
                if best_of > 1
                else None
            )
            text = infotext(p, seed, used, ranking)
            picture = prepare.to_pil(pixels)
            if p.save_samples():
                images.save_image(
                    picture,
                    p.outpath_samples,
                    "",
                    seed,
                    p.prompt,
                    opts.samples_format,
                    info=text,
                    p=p,
                )
            pictures.append(picture)
            infotexts.append(text)
        finished += 1
        state.nextjob()
    return pictures, infotexts, finished, jobs


def edit(p, values: dict) -> processing.Processed:
    image, mask = inputs.source_and_mask(p)
    exemplar = inputs.read_picture(values["exemplar"], "exemplar")
    if exemplar is None:
        raise PaintByExampleError("No exemplar: add the picture of the object to paint in.")
    exemplar, exemplar_mask = inputs.split_alpha(exemplar)
    negative = inputs.read_picture(values["negative exemplar"], "negative exemplar")
    values["negative exemplar"] = negative
    path = resolve_model(values["model"])
    lora = resolve_lora(values["LoRA"])
    values["LoRA"] = values["LoRA"] if lora is not None else None

    area = inputs.area_options(p, mask, values["crop context"])
    options = area | {
        "steps": int(p.steps),
        "guidance": float(p.cfg_scale),
        "sampler": inputs.SAMPLERS[values["sampler"]][0],
        "exemplar_mode": values["exemplar mode"],
        "exemplar_mask": exemplar_mask,
        "colour_match": values["colour match"],
        "candidates": values["best of"],
    }
    if negative is not None:
        options |= {
            "negative_exemplar": negative.convert("RGB"),
            "negative_weight": values["negative exemplar weight"],
        }
    base_seed = int(processing.get_fixed_seed(p.seed))
    p.seed = base_seed
    # with "best of N", image i ranks the seeds seed + i * N .. seed + i * N + N - 1
    p.all_seeds = [base_seed + i * values["best of"] for i in range(p.n_iter * p.batch_size)]
    p.all_prompts = p.all_negative_prompts = [""] * len(p.all_seeds)  # the prompts are unused
    p.all_subseeds = [-1] * len(p.all_seeds)
    p.subseed_strength = 0
    used = used_parameters(p, values, area, model_hash(path, values["model"]))

    device = target_device()
    pipe = load_pipeline(path, target_dtype(device), lora, values["LoRA strength"])
    short = memory_is_short(pipe, device)
    restore = move_webui_model_off_gpu() if short else None
    try:
        pipe.to(device)
        pictures, infotexts, finished, jobs = generate(
            p, pipe, image, mask, exemplar, options, used
        )
    finally:
        if short:  # give the GPU back to the webui
            pipe.to("cpu")
            devices.torch_gc()
            if restore is not None:
                restore()
    if finished < jobs and state.interrupted:
        note = (
            f"Interrupted after {finished} of {jobs} batches: "
            f"{len(pictures)} finished image{'s' if len(pictures) != 1 else ''} returned."
        )
        p.comment(note)  # shown under the gallery
        p.extra_generation_params["Paint by Example"] = note  # in the API's info
        state.textinfo = note
    return processing.Processed(
        p, pictures, seed=base_seed, info=infotexts[0] if infotexts else "", infotexts=infotexts
    )


def failed(p, error: PaintByExampleError) -> processing.Processed:
    """The mistake as the API's 400, or as the job's message in the UI."""
    if getattr(p, "is_api", True):
        raise error
    p.comment(str(error))
    return processing.Processed(p, [], seed=p.seed, info="")


def run(p, values: dict) -> processing.Processed:
    try:
        return edit(p, values)
    except PaintByExampleError as error:
        return failed(p, error)
