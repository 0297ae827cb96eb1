"""What the edit used, written where PNG Info and "send to" read it, so pasting restores it.

The infotext is written here rather than by the webui's `create_infotext`: that one records
the tab's prompts, denoising strength and the webui's checkpoint, which the edit does not use,
and on Forge it reads attributes of a loaded Stable Diffusion model, which there need not be.
No prompt line: the prompts are not used.
"""

from __future__ import annotations

from modules import processing
from modules.infotext_utils import quote
from modules.shared import opts

from .inputs import SAMPLERS

TITLE = "Paint by Example"


def used_parameters(p, values: dict, area: dict, model_hash: str | None) -> dict:
    """The script's settings this edit uses, as infotext fields (also shown in the job's info);
    sets the tab's sampler fields to the webui's name for the sampler used."""
    _, p.sampler_name, p.scheduler = SAMPLERS[values["sampler"]]
    only_masked = area["region"] == "auto"
    negative = values["negative exemplar"] is not None
    lora = values["LoRA"]
    used = {
        "Script": TITLE,
        "PbE model": values["model"],
        "PbE model hash": model_hash,
        "PbE sampler": values["sampler"],
        "PbE exemplar mode": values["exemplar mode"],
        "PbE crop context": values["crop context"] if only_masked else None,
        "PbE negative exemplar weight": values["negative exemplar weight"] if negative else None,
        "PbE colour match": values["colour match"] or None,
        "PbE best of": values["best of"] if values["best of"] > 1 else None,
        "PbE LoRA": lora,
        "PbE LoRA strength": values["LoRA strength"] if lora else None,
        "Mask blur": p.mask_blur if area["feather"] else None,
        "Mask mode": "Inpaint not masked" if p.inpainting_mask_invert else None,
        "Inpaint area": "Only masked" if only_masked else None,
        "Masked area padding": p.inpaint_full_res_padding if only_masked else None,
    }
    used = {key: value for key, value in used.items() if value is not None}
    p.extra_generation_params.update(used)
    return used


def infotext(p, seed: int, used: dict, extra: dict | None = None) -> str:
    """One image's infotext: the tab's fields the edit uses, then the script's."""
    fields = {
        "Steps": p.steps,
        "Sampler": p.sampler_name,
        "Schedule type": p.scheduler,
        "CFG scale": p.cfg_scale,
        "Seed": seed,
        "Size": f"{p.width}x{p.height}",
        **used,
        **(extra or {}),
        "Version": processing.program_version() if opts.add_version_to_infotext else None,
    }
    return ", ".join(f"{key}: {quote(value)}" for key, value in fields.items() if value is not None)
