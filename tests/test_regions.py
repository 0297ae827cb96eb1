"""pbe_core.regions: property tests for the crop / stitch round trip and the mask geometry."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from pbe_core.regions import (
    Region,
    crop,
    feather_mask,
    grow_mask,
    mask_bbox,
    mask_to_bbox_mask,
    plan_full,
    plan_region,
    stitch,
)

PROPERTY = settings(max_examples=40, deadline=None, database=None)


@st.composite
def edit_masks(draw, max_side: int = 300) -> torch.Tensor:
    """(1, 1, H, W) edit masks: empty, full, boxes (often touching a border), pixels, blobs."""
    height, width = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    mask = torch.zeros(1, 1, height, width)
    kind = draw(st.sampled_from(["empty", "full", "box", "pixel", "blob"]))
    if kind == "full":
        mask[:] = 1
    elif kind in ("box", "pixel"):
        x0, y0 = draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1))
        x1 = x0 + 1 if kind == "pixel" else draw(st.integers(x0 + 1, width))
        y1 = y0 + 1 if kind == "pixel" else draw(st.integers(y0 + 1, height))
        mask[..., y0:y1, x0:x1] = 1
    elif kind == "blob":
        generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
        density = draw(st.floats(0.0005, 0.2))
        mask = (torch.rand(1, 1, height, width, generator=generator) < density).float()
    return mask * draw(st.sampled_from([1.0, 0.7]))  # soft masks too


def noise_like(mask: torch.Tensor, seed: int, channels: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(mask.shape[0], channels, *mask.shape[-2:], generator=generator)


def smooth_image(height: int, width: int, seed: int) -> torch.Tensor:
    """Low-frequency colour field (period 160 px): what a resize round trip should preserve."""
    phase = torch.rand(3, 2, generator=torch.Generator().manual_seed(seed)) * 2 * math.pi
    ys = torch.arange(height, dtype=torch.float32).view(-1, 1) * 2 * math.pi / 160
    xs = torch.arange(width, dtype=torch.float32).view(1, -1) * 2 * math.pi / 160
    planes = [0.5 + 0.4 * torch.sin(xs + p[0]) * torch.cos(ys + p[1]) for p in phase]
    return torch.stack(planes)[None]


def brute_force_bbox(mask: torch.Tensor):
    points = (mask > 0).any(0).any(0).nonzero()
    if len(points) == 0:
        return None
    (y0, x0), (y1, x1) = points.min(0).values.tolist(), points.max(0).values.tolist()
    return x0, y0, x1 + 1, y1 + 1


# --- plan_region / plan_full -------------------------------------------------------------------


@PROPERTY
@given(
    mask=edit_masks(),
    context=st.floats(1.0, 3.0),
    resolution=st.sampled_from([64, 100, 512]),
    min_size=st.integers(1, 200),
    margin=st.integers(0, 20),
    max_aspect=st.sampled_from([1.0, 1.5, 2.0, 4.0]),
)
def test_plan_region_invariants(mask, context, resolution, min_size, margin, max_aspect):
    height, width = mask.shape[-2:]
    region = plan_region(
        (height, width), mask, context, resolution, 8, min_size, margin, max_aspect
    )
    assert region.width % 8 == 0 and region.height % 8 == 0
    assert max(region.width, region.height) == round(resolution / 8) * 8
    bbox = mask_bbox(mask) or (0, 0, width, height)
    assert region.x0 <= bbox[0] and region.y0 <= bbox[1]  # the box covers the mask
    assert region.x1 >= bbox[2] and region.y1 >= bbox[3]
    long_side, short_side = sorted((region.box_width, region.box_height), reverse=True)
    work_long, work_short = sorted((region.width, region.height), reverse=True)
    assert abs(short_side - long_side * work_short / work_long) <= 0.5  # same aspect as the work
    assert long_side <= max_aspect * (short_side + 0.5) + 1
    if region.box_width <= width:  # shifted inside the image whenever it fits
        assert 0 <= region.x0 and region.x1 <= width
    if region.box_height <= height:
        assert 0 <= region.y0 and region.y1 <= height


def test_tiny_mask_gets_context_and_big_photo_is_not_worked_at_full_size():
    mask = torch.zeros(1, 1, 2048, 2048)
    mask[..., 1000:1003, 700:703] = 1
    region = plan_region((2048, 2048), mask)
    assert (region.box_width, region.box_height) == (128, 128)  # min_size, not 4.5 pixels
    assert (region.width, region.height) == (512, 512)
    assert region.x0 <= 700 and region.x1 >= 703


@given(height=st.integers(1, 300), width=st.integers(1, 300), seed=st.integers(0, 99))
@PROPERTY
def test_plan_full_round_trip_is_exact(height, width, seed):
    image = noise_like(torch.zeros(1, 1, height, width), seed)
    mask = (noise_like(image, seed + 1, 1) > 0.5).float()
    region = plan_full((height, width))
    assert region.width % 8 == 0 and region.height % 8 == 0
    assert region.width - width < 8 and region.height - height < 8
    image_crop, mask_crop = crop(image, mask, region)
    assert torch.equal(image_crop[..., :height, :width], image)
    assert torch.equal(mask_crop[..., :height, :width], mask)
    assert torch.allclose(stitch(image, image_crop, mask, region, 3, 2), image, atol=1e-6)


# --- crop / stitch round trip ------------------------------------------------------------------


@PROPERTY
@given(
    mask=edit_masks(),
    grow=st.integers(-5, 8),
    feather=st.integers(0, 8),
    margin=st.integers(0, 16),  # at times less than grow + feather: the blend is cut at the box
    tight=st.booleans(),  # context 1, no minimum size: the mask touches the box
    seed=st.integers(0, 99),
)
def test_stitch_leaves_every_pixel_outside_the_blend_bit_identical(
    mask, grow, feather, margin, tight, seed
):
    image = noise_like(mask, seed)
    context, min_size = (1.0, 1) if tight else (1.5, 128)
    region = plan_region(mask.shape[-2:], mask, context, 64, 8, min_size, margin)
    image_crop, mask_crop = crop(image, mask, region)
    assert image_crop.shape == (1, 3, region.height, region.width)
    assert mask_crop.shape == (1, 1, region.height, region.width)
    edited = noise_like(mask_crop, seed + 1)
    edited[..., 0, 0] = math.nan  # a broken pixel must not leak outside the blend either
    result = stitch(image, edited, mask, region, grow=grow, feather=feather)
    weight = feather_mask(grow_mask(mask, grow), feather).expand_as(image)
    assert torch.equal(result[weight == 0], image[weight == 0])
    if (weight > 0).any():
        assert not torch.equal(result, image)  # the edit did land


@PROPERTY
@given(mask=edit_masks(), seed=st.integers(0, 99), max_aspect=st.sampled_from([1.0, 2.0, 4.0]))
def test_identity_edit_round_trips_inside_too(mask, seed, max_aspect):
    image = smooth_image(*mask.shape[-2:], seed)
    region = plan_region(mask.shape[-2:], mask, resolution=64, margin=6, max_aspect=max_aspect)
    image_crop, _ = crop(image, mask, region)
    result = stitch(image, image_crop, mask, region, grow=2, feather=4)
    assert (result - image).abs().max() < 0.03


@pytest.mark.parametrize("grow, feather", [(-2, 0), (-3, 2), (3, 4), (0, 5)])
def test_stitch_blends_exactly_as_a_full_size_blend_would(grow, feather):
    mask = torch.zeros(1, 1, 100, 100)
    mask[..., 20:40, 10:60] = 1  # the box below cuts through the mask at x = 30
    region = Region(30, 18, 62, 42, 32, 24, 100, 100)  # working size = box size: no resize
    image, edited = torch.rand(1, 3, 100, 100), torch.rand(1, 3, 24, 32)
    weight = feather_mask(grow_mask(mask, grow), feather)
    box = (..., slice(18, 42), slice(30, 62))
    expected = image.clone()
    blend = image[box] * (1 - weight[box]) + edited * weight[box]
    expected[box] = torch.where(weight[box] > 0, blend, image[box])
    result = stitch(image, edited, mask, region, grow=grow, feather=feather)
    assert torch.allclose(result, expected, atol=1e-6)
    untouched = (weight == 0).expand_as(image)
    assert torch.equal(result[untouched], image[untouched])


def test_batches_broadcast_and_mismatches_are_named():
    mask = torch.zeros(1, 1, 40, 30)
    mask[..., 5:9, 5:9] = 1
    region = plan_region((40, 30), mask, resolution=32)
    images = torch.rand(2, 3, 40, 30)
    image_crop, mask_crop = crop(images, mask, region)
    assert image_crop.shape[0] == 2 and mask_crop.shape[0] == 2
    assert stitch(images, image_crop, mask, region).shape == (2, 3, 40, 30)
    with pytest.raises(ValueError, match="original has 2, edited_crop has 3"):
        stitch(images, image_crop.repeat(2, 1, 1, 1)[:3], mask, region)
    with pytest.raises(ValueError, match="working size"):
        stitch(images, image_crop[..., :8], mask, region)
    with pytest.raises(ValueError, match="planned for a 30x40 image"):
        crop(torch.rand(1, 3, 41, 30), mask, region)


def test_region_rejects_empty_or_outside_boxes():
    with pytest.raises(ValueError, match="empty region"):
        Region(5, 5, 5, 9, 8, 8, 10, 10)
    with pytest.raises(ValueError, match="outside the image"):
        Region(10, 0, 20, 8, 8, 8, 10, 10)


class LargestAllocation(TorchDispatchMode):
    """Records the largest new storage any aten op allocates (views allocate nothing)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in _tensors((args, kwargs))}
        for tensor in _tensors(out):
            if tensor.untyped_storage().data_ptr() not in inputs:
                self.largest = max(self.largest, tensor.untyped_storage().nbytes())
        return out


def _tensors(tree):
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, (list, tuple)):
        for item in tree:
            yield from _tensors(item)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _tensors(item)


def test_small_mask_in_a_big_photo_never_touches_it_at_full_size():
    image = torch.rand(1, 3, 2048, 2048)
    mask = torch.zeros(1, 1, 2048, 2048)
    mask[..., 1500:1520, 300:310] = 1
    with LargestAllocation() as allocations:
        region = plan_region((2048, 2048), mask, resolution=64)
        crop(image, mask, region)
    budget = 3 * 4 * (region.box_width * region.box_height + region.width * region.height)
    assert 0 < allocations.largest <= budget < image.nbytes // 100


# --- mask geometry -----------------------------------------------------------------------------


@PROPERTY
@given(mask=edit_masks(max_side=40), other=edit_masks(max_side=40))
def test_mask_bbox_is_the_union_over_the_batch(mask, other):
    other = F.interpolate(other, size=mask.shape[-2:])
    batch = torch.cat([mask, other])
    assert mask_bbox(mask) == brute_force_bbox(mask)
    assert mask_bbox(batch) == brute_force_bbox(batch)
    boxes = mask_to_bbox_mask(batch)
    for index in range(2):
        box = brute_force_bbox(batch[index : index + 1])
        assert boxes[index].sum() == (0 if box is None else (box[2] - box[0]) * (box[3] - box[1]))
        assert mask_bbox(boxes[index : index + 1]) == box


def brute_force_grow(mask: torch.Tensor, pixels: int, kernel: str) -> torch.Tensor:
    """Max (or min) over the kernel's offsets, ignoring pixels beyond the border."""
    radius, height, width = abs(pixels), *mask.shape[-2:]
    outside = -math.inf if pixels > 0 else math.inf
    padded = F.pad(mask, (radius,) * 4, value=outside)
    best = torch.full_like(mask, outside)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if kernel == "round" and dx * dx + dy * dy > radius * radius:
                continue
            shifted = padded[
                ..., radius + dy : radius + dy + height, radius + dx : radius + dx + width
            ]
            best = torch.maximum(best, shifted) if pixels > 0 else torch.minimum(best, shifted)
    return best


@PROPERTY
@given(
    mask=edit_masks(max_side=24),
    pixels=st.integers(-5, 5),
    kernel=st.sampled_from(["square", "round"]),
    seed=st.integers(0, 99),
)
def test_grow_is_exact_dilation_and_erosion(mask, pixels, kernel, seed):
    soft = mask * noise_like(mask, seed, 1)
    grown = grow_mask(soft, pixels, kernel)
    assert torch.equal(grown, soft if pixels == 0 else brute_force_grow(soft, pixels, kernel))
    if pixels > 0:
        assert (grown >= soft).all()
    if pixels < 0:
        assert (grown <= soft).all()


def test_round_kernel_is_a_disc_and_full_masks_do_not_erode_at_borders():
    dot = torch.zeros(1, 1, 11, 11)
    dot[..., 5, 5] = 1
    disc = grow_mask(dot, 3, "round")[0, 0]
    assert disc[5, 2] == 1 and disc[2, 5] == 1 and disc[3, 3] == 1 and disc[2, 3] == 0
    assert grow_mask(dot, 3, "square")[0, 0, 2, 2] == 1
    full = torch.ones(1, 1, 6, 9)
    assert torch.equal(grow_mask(full, -4), full)


@PROPERTY
@given(mask=edit_masks(max_side=60), radius=st.integers(0, 9))
def test_feather_keeps_the_inside_and_ends_within_the_radius(mask, radius):
    binary = (mask > 0).float()
    feathered = feather_mask(binary, radius)
    assert (feathered[binary == 1] == 1).all()
    assert (feathered >= binary).all() and (feathered <= 1).all()
    reach = grow_mask(binary, radius, "square")
    assert (feathered[reach == 0] == 0).all()
    if radius:
        ring = (grow_mask(binary, 1, "square") - binary) > 0
        assert (feathered[ring] > 0).all()


def test_feather_profile_falls_from_one_to_zero_over_the_radius():
    half_plane = torch.zeros(1, 1, 5, 40)
    half_plane[..., :10] = 1
    profile = feather_mask(half_plane, 8)[0, 0, 2, 9:].tolist()  # from the last masked column
    assert profile[0] == 1 and profile[1] > 0.9 and 0 < profile[8] < 0.1 and profile[9] == 0
    assert all(a >= b for a, b in zip(profile, profile[1:], strict=False))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        grow_mask(torch.zeros(1, 3, 4, 4), 1)
    with pytest.raises(ValueError, match="kernel"):
        grow_mask(torch.zeros(1, 1, 4, 4), 1, "diamond")
    with pytest.raises(ValueError, match="radius"):
        feather_mask(torch.zeros(1, 1, 4, 4), -1)
    with pytest.raises(ValueError, match="edit_mask is"):
        plan_region((5, 5), torch.zeros(1, 1, 4, 4))
