"""Crop options users of crop-and-stitch packs expect: fill holes, hipass, context mask, multiple."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from pbe_core.masks import fill_holes, hipass_mask
from pbe_core.regions import mask_bbox, plan_region

PROPERTY = settings(max_examples=40, deadline=None, database=None)
MANY = settings(max_examples=200, deadline=None, database=None)


def random_mask(seed: int, height: int, width: int, density: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 1, height, width, generator=generator) < density).float()


def flood_fill_holes(mask: torch.Tensor) -> torch.Tensor:
    """Reference: PIL's flood fill of the background from outside the image, 4-connected."""
    binary = (mask[0, 0] > 0.5).numpy()
    # copy: fromarray shares the array's read-only buffer, which floodfill would not write to
    picture = Image.fromarray(np.pad(np.where(binary, 255, 0).astype(np.uint8), 1)).copy()
    ImageDraw.floodfill(picture, (0, 0), 128, thresh=0)
    holes = np.asarray(picture)[1:-1, 1:-1] == 0
    return torch.maximum(mask, torch.from_numpy(holes).float()[None, None])


@PROPERTY
@given(seed=st.integers(0, 2**16), height=st.integers(1, 40), width=st.integers(1, 40),
       density=st.floats(0.05, 0.9))
def test_fill_holes_matches_a_flood_fill(seed, height, width, density):
    mask = random_mask(seed, height, width, density)
    assert torch.equal(fill_holes(mask), flood_fill_holes(mask))


def test_fill_holes_on_a_ring_a_bay_and_soft_values():
    mask = torch.zeros(1, 1, 30, 40)
    mask[..., 5:20, 5:20] = 0.9
    mask[..., 8:17, 8:17] = 0.2  # enclosed, soft: filled to 1
    mask[..., 0:10, 25:40] = 1
    mask[..., 0:6, 28:37] = 0  # a bay open to the top border: not a hole
    filled = fill_holes(mask)
    assert torch.all(filled[..., 8:17, 8:17] == 1)
    assert torch.all(filled[..., 0:6, 28:37] == 0)
    assert torch.all(filled[..., 5:8, 5:20] == 0.9)  # other values stay as they were
    batch = torch.cat([mask, torch.zeros_like(mask)])
    assert torch.equal(fill_holes(batch)[1], batch[1])
    assert torch.equal(fill_holes(batch)[:1], filled)


def test_hipass_drops_faint_values_only():
    mask = torch.tensor([0.0, 0.05, 0.1, 0.3, 1.0]).view(1, 1, 1, 5)
    assert hipass_mask(mask, 0.1).flatten().tolist() == pytest.approx([0, 0, 0.1, 0.3, 1.0])
    assert hipass_mask(mask, 0.0) is mask
    with pytest.raises(ValueError, match="0..1"):
        hipass_mask(mask, 1.5)
    haze = torch.full((1, 1, 200, 200), 0.02)
    haze[..., 90:110, 90:110] = 1
    assert mask_bbox(haze) == (0, 0, 200, 200)
    assert mask_bbox(hipass_mask(haze, 0.05)) == (90, 90, 110, 110)  # the crop no longer grows


@MANY
@given(
    box=st.tuples(st.integers(0, 150), st.integers(0, 100), st.integers(1, 60), st.integers(1, 60)),
    extra=st.tuples(st.integers(0, 199), st.integers(0, 149), st.integers(1, 200), st.integers(1, 150)),
    context=st.floats(1.0, 2.0),
    max_aspect=st.sampled_from([1.0, 2.0, 4.0]),
    multiple=st.sampled_from([8, 16, 64]),
)
def test_context_mask_is_inside_the_crop(box, extra, context, max_aspect, multiple):
    height, width = 150, 200
    mask = torch.zeros(1, 1, height, width)
    x, y, w, h = box
    mask[..., y : y + h, x : x + w] = 1
    context_mask = torch.zeros_like(mask)
    ex, ey, ew, eh = extra
    context_mask[..., ey : ey + eh, ex : ex + ew] = 1
    region = plan_region((height, width), mask, context, 256, multiple, 32, max_aspect=max_aspect,
                         context_mask=context_mask)
    assert region.width % multiple == 0 and region.height % multiple == 0
    for x0, y0, x1, y1 in (mask_bbox(mask), mask_bbox(context_mask)):
        assert region.x0 <= x0 and region.y0 <= y0 and region.x1 >= x1 and region.y1 >= y1
    assert min(region.box_width, region.box_height) >= 32  # min_size still holds
    plain = plan_region((height, width), mask, context, 256, multiple, 32, max_aspect=max_aspect)
    empty = plan_region((height, width), mask, context, 256, multiple, 32, max_aspect=max_aspect,
                        context_mask=torch.zeros_like(mask))
    assert empty == plain


def test_context_mask_size_is_checked():
    mask = torch.zeros(1, 1, 50, 50)
    mask[..., 10:20, 10:20] = 1
    with pytest.raises(ValueError, match="context_mask is"):
        plan_region((50, 50), mask, context_mask=torch.ones(1, 1, 25, 50))


def test_the_edit_takes_the_crop_options(tiny):
    from pbe_core.pipeline import PaintByExample

    pipe = PaintByExample(tiny, device="cpu", dtype=torch.float32)
    scene = Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8))
    exemplar = Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    ring = np.zeros((120, 160), np.uint8)
    ring[40:80, 60:100] = 255
    ring[50:70, 70:90] = 0  # a hole the model would otherwise keep
    common = dict(steps=1, sampler="ddim", resolution=64, feather=0, min_size=16, context=1.0)
    holed = pipe.run(scene, Image.fromarray(ring), exemplar, **common)
    filled = pipe.run(scene, Image.fromarray(ring), exemplar, fill_holes=True, **common)
    before = np.asarray(scene).astype(int)
    changed = lambda result: np.abs((result.images[0].permute(1, 2, 0).numpy() * 255).round() - before).sum(-1) > 0  # noqa: E731
    assert not changed(holed)[55:65, 75:85].any() and changed(filled)[55:65, 75:85].all()
    context = np.zeros((120, 160), np.uint8)
    context[0:10, 0:10] = 255
    wide = pipe.run(scene, Image.fromarray(ring), exemplar, context_mask=Image.fromarray(context),
                    multiple=16, **common)
    assert wide.region.x0 <= 0 and wide.region.y0 <= 0 and wide.region.x1 >= 100
    assert wide.region.width % 16 == 0 and wide.region.height % 16 == 0
