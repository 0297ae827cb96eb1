"""Sample edits of held-out pictures during training, through the real editing pipeline.

Held-out picture i is edited in its object's box with the object of picture i + 1 as the
exemplar; one row per picture: scene with the box greyed, exemplar, result.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from ..checkpoint import Models
from ..files import atomic_write
from ..pipeline import PaintByExample
from .samples import box_mask, object_box


def sample_edits(
    models: Models, held_out: Sequence, resolution: int = 512, steps: int = 20, seed: int = 0,
    device: str | torch.device = "cpu",
) -> Image.Image:
    """A grid of edits (rows: scene with its mask greyed, exemplar, result) at `resolution`."""
    pipe = PaintByExample(models, device=device, dtype=torch.float32)
    pairs = [held_out[i] for i in range(len(held_out))]
    rows = []
    for index, (picture, region) in enumerate(pairs):
        box = object_box(region, picture.size)
        exemplar_picture, exemplar_region = pairs[(index + 1) % len(pairs)]
        exemplar = exemplar_picture.crop(object_box(exemplar_region, exemplar_picture.size))
        mask = box_mask(box, picture.size)
        [result] = pipe.edit(picture, mask, exemplar, steps=steps, resolution=resolution, seed=seed)
        shown = picture.copy()
        shown.paste((128, 128, 128), box)
        rows.append([shown, exemplar.resize(picture.size), result])
    width = max(sum(p.width for p in row) for row in rows)
    grid = Image.new("RGB", (width, sum(row[0].height for row in rows)), (0, 0, 0))
    top = 0
    for row in rows:
        left = 0
        for part in row:
            grid.paste(part, (left, top))
            left += part.width
        top += row[0].height
    return grid


class Previewer:
    """`every` callback for `Trainer.run`: writes `folder/step-000100.png` every `every` steps."""

    def __init__(self, models: Models, held_out: Sequence, folder: str | os.PathLike, every: int,
                 resolution: int, steps: int = 20, device: str | torch.device = "cpu"):
        self.models, self.held_out, self.folder = models, held_out, Path(folder)
        self.every, self.resolution, self.steps, self.device = every, resolution, steps, device
        self.written: list[Path] = []

    def __call__(self, step: int) -> None:
        if not self.every or step % self.every or not len(self.held_out):
            return
        grid = sample_edits(self.models, self.held_out, self.resolution, self.steps, device=self.device)
        path = self.folder / f"step-{step:06d}.png"
        self.written.append(atomic_write(path, lambda tmp: grid.save(tmp, format="PNG")))

