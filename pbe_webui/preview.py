"""Progress and the live preview while sampling, as the webui's own samplers feed them.

The webui's samplers store their latent in `state.current_latent` and the progress request
decodes it with the webui's Stable Diffusion model. Here that latent stays unset (decoding it
would load a checkpoint the edit never uses); the preview is decoded with the Paint by Example
model's own VAE and handed over with `state.assign_current_image`, at the settings' pace:
"Live previews" on, every "show_progress_every_n_steps" steps, the whole batch as a grid when
"show_progress_grid" is on, and not at all when the webui allows no parallel processing
(--lowvram, --medvram), when it decodes nothing during sampling either.
"""

from __future__ import annotations

import torch
from modules import images, shared
from modules.shared import opts, state

from pbe_core import prepare
from pbe_core.pipeline import PaintByExample


def preview_due(step: int) -> bool:
    every = opts.show_progress_every_n_steps
    return (
        shared.parallel_processing_allowed
        and opts.live_previews_enable
        and every > 0
        and step % every == 0
    )


def decode(pipe: PaintByExample, x0: torch.Tensor):
    """The predicted clean latents as a picture: the first one, or a grid of all."""
    vae = pipe.models.vae
    latents = x0 if opts.show_progress_grid else x0[:1]
    with torch.inference_mode():
        pixels = vae.decode(latents.to(pipe.dtype) / vae.config.scaling_factor)
    pictures = [prepare.to_pil(((p.float() + 1) / 2).clamp(0, 1).cpu()) for p in pixels]
    return pictures[0] if len(pictures) == 1 else images.image_grid(pictures)


def step_callback(pipe: PaintByExample):
    def callback(step: int, _total: int, x0: torch.Tensor) -> None:
        state.sampling_step = step + 1
        if preview_due(state.sampling_step):
            state.assign_current_image(decode(pipe, x0))

    return callback
