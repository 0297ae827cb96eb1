"""`python -m pbe_core demo`: a real exemplar-driven edit by the toy model this project trains.

The toy model (`pbe_core.train.toy_model`) is trained on this machine the first time (minutes
on two cores, from nothing) and cached; later demos load it in seconds. The demo edits held-out
toy scenes it never trained on: the mask covers one object, the exemplar is an object of another
colour from another scene, and the result should show an object of the exemplar's colour there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .files import atomic_write
from .pipeline import PaintByExample
from .train.toy import COLOURS, SHAPES, ToyCase, dominant_colour, toy_cases
from .train.toy_model import toy_model

ZOOM = 4  # the overview's pixels per scene pixel: 64 px scenes are small to look at


def _outlined(scene: np.ndarray, mask: np.ndarray) -> Image.Image:
    """The scene, zoomed, with the mask's box drawn in white."""
    picture = Image.fromarray(scene).resize((scene.shape[1] * ZOOM, scene.shape[0] * ZOOM), Image.NEAREST)
    ys, xs = np.nonzero(mask > 127)
    box = (xs.min() * ZOOM, ys.min() * ZOOM, (xs.max() + 1) * ZOOM - 1, (ys.max() + 1) * ZOOM - 1)
    ImageDraw.Draw(picture).rectangle(box, outline=(255, 255, 255), width=2)
    return picture


def overview(cases: list[ToyCase], results: list[Image.Image]) -> Image.Image:
    """One row per case: scene with the mask's box, the exemplar, the result."""
    side = cases[0].scene.shape[0] * ZOOM
    gap = 8
    sheet = Image.new("RGB", (3 * side + 4 * gap, len(cases) * (side + gap) + gap), (24, 24, 24))
    for row, (case, result) in enumerate(zip(cases, results, strict=True)):
        y = gap + row * (side + gap)
        tiles = (
            _outlined(case.scene, case.mask),
            Image.fromarray(case.exemplar).resize((side, side), Image.NEAREST),
            result.resize((side, side), Image.NEAREST),
        )
        for column, tile in enumerate(tiles):
            sheet.paste(tile, (gap + column * (side + gap), y))
    return sheet


def run_demo(
    folder: Path, *, cases: int = 4, steps: int = 25, guidance: float = 5.0,
    report: Callable[[str], None] = print,
) -> list[str]:
    """Edit `cases` held-out toy scenes; write scene/mask/exemplar/result.png (the first case)
    and overview.png (all cases) into `folder`. Returns one line per case."""
    models, path = toy_model(report=report)
    report(f"demo: toy model {path}")
    chosen = toy_cases(cases)
    pipe = PaintByExample(models)
    result = pipe.run(
        [c.scene for c in chosen], [c.mask for c in chosen], [c.exemplar for c in chosen],
        steps=steps, guidance=guidance, sampler="ddim", seed=0, region="full",
        feather=2,  # the default 8 px would blend over a quarter of a 64 px scene
    )
    pixels = (result.images.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().numpy()
    results = [Image.fromarray(p) for p in pixels]
    first = chosen[0]
    files = {
        "scene.png": Image.fromarray(first.scene), "mask.png": Image.fromarray(first.mask),
        "exemplar.png": Image.fromarray(first.exemplar), "result.png": results[0],
        "overview.png": overview(chosen, results),
    }
    for name, picture in files.items():
        atomic_write(folder / name, lambda tmp, picture=picture: picture.save(tmp, format="PNG"))
    lines = []
    for index, (case, picture) in enumerate(zip(chosen, pixels, strict=True)):
        found = dominant_colour(picture / 255.0, case.mask > 127)
        painted = COLOURS[found] if found is not None else "no object"
        lines.append(f"case {index}: exemplar {COLOURS[case.colour]} {SHAPES[case.shape]} -> painted {painted}")
    return lines
