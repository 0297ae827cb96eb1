"""What the edit used, written where PNG Info and "send to" read it, so pasting restores it."""

from __future__ import annotations

from pathlib import Path

from .inputs import SAMPLERS
from .models import model_hash

TITLE = "Paint by Example"


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
