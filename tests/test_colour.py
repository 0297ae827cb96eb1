"""pbe_core.colour: colour match on pictures with a known colour shift."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pbe_core.colour import colour_match, lab_to_rgb, rgb_to_lab
from pbe_core.regions import feather_mask, grow_mask

BOX = (40, 30, 80, 70)  # x0, y0, x1, y1 in a 100 x 120 picture


def texture(seed: int = 0, height: int = 100, width: int = 120) -> torch.Tensor:
    """Stationary colour noise around mid-grey: the region and its ring share statistics."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.tensor([0.45, 0.5, 0.4]).view(1, 3, 1, 1)
    return (base + 0.08 * torch.randn(1, 3, height, width, generator=generator)).clamp(0, 1)


def box_mask(height: int = 100, width: int = 120, box=BOX) -> torch.Tensor:
    mask = torch.zeros(1, 1, height, width)
    x0, y0, x1, y1 = box
    mask[..., y0:y1, x0:x1] = 1
    return mask


def shifted(picture: torch.Tensor, mask: torch.Tensor, red: float = 0.2) -> torch.Tensor:
    shift = torch.tensor([red, 0.0, 0.0]).view(1, 3, 1, 1)
    return torch.where(mask > 0.5, (picture + shift).clamp(0, 1), picture)


def region_mean(picture: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return picture[:, :, mask[0, 0] > 0.5].mean(dim=-1)[0]


def test_lab_round_trip_and_known_values():
    rgb = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-4)
    white, black = rgb_to_lab(torch.ones(1, 3, 1, 1)), rgb_to_lab(torch.zeros(1, 3, 1, 1))
    assert torch.allclose(white.flatten(), torch.tensor([100.0, 0, 0]), atol=1e-2)
    assert torch.allclose(black.flatten(), torch.zeros(3), atol=1e-3)
    red = rgb_to_lab(torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1)).flatten()
    assert torch.allclose(red, torch.tensor([53.24, 80.09, 67.20]), atol=0.05)  # CIE sRGB red


@pytest.mark.parametrize("feather", [0, 6])
def test_a_red_shift_comes_back(feather):
    truth, mask = texture(), box_mask()
    edited = shifted(truth, mask)
    target, cast = region_mean(truth, mask), region_mean(edited, mask)
    assert cast[0] - target[0] > 0.19
    full = colour_match(edited, mask, 1.0, feather=feather)
    assert (region_mean(full, mask) - target).abs().max() < 0.01
    inside = mask[0, 0] > 0.5
    assert (full - truth)[:, :, inside].abs().mean() < 0.02  # per pixel, not only on average
    half = colour_match(edited, mask, 0.5, feather=feather)
    assert torch.allclose(region_mean(half, mask), (cast + region_mean(full, mask)) / 2, atol=1e-4)
    assert torch.equal(colour_match(edited, mask, 0.0, feather=feather), edited)


@pytest.mark.parametrize("grow, feather", [(0, 0), (3, 5), (-2, 4)])
def test_every_pixel_outside_the_feathered_mask_is_identical(grow, feather):
    truth, mask = texture(2), box_mask()
    edited = shifted(truth, mask, 0.3)
    result = colour_match(edited, mask, 1.0, grow=grow, feather=feather)
    outside = feather_mask(grow_mask(mask, grow), feather) == 0
    assert torch.equal(result[outside.expand_as(result)], edited[outside.expand_as(edited)])
    assert (result - edited)[~outside.expand_as(result)].abs().max() > 0.1


@settings(max_examples=25, deadline=None, database=None)
@given(
    seed=st.integers(0, 2**16),
    x0=st.integers(0, 50), y0=st.integers(0, 40), w=st.integers(1, 60), h=st.integers(1, 50),
    grow=st.integers(-3, 6), feather=st.integers(0, 10), strength=st.floats(0, 1),
    soft=st.sampled_from([1.0, 0.8]),
)
def test_outside_identical_property(seed, x0, y0, w, h, grow, feather, strength, soft):
    picture = torch.rand(1, 3, 60, 90, generator=torch.Generator().manual_seed(seed))
    mask = box_mask(60, 90, (x0, y0, min(x0 + w, 90), min(y0 + h, 60))) * soft
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a mask covering everything warns; allowed here
        result = colour_match(picture, mask, strength, grow=grow, feather=feather)
    outside = (feather_mask(grow_mask(mask, grow), feather) == 0).expand_as(picture)
    assert torch.equal(result[outside], picture[outside])
    assert result.min() >= 0 and result.max() <= 1


def test_batch_items_are_matched_on_their_own():
    truth = torch.cat([texture(3), texture(4)])
    masks = torch.cat([box_mask(), box_mask(box=(10, 10, 50, 40))])
    edited = torch.cat([shifted(truth[:1], masks[:1], 0.2), shifted(truth[1:], masks[1:], -0.2)])
    together = colour_match(edited, masks, 1.0, feather=4)
    for index in range(2):
        alone = colour_match(edited[index : index + 1], masks[index : index + 1], 1.0, feather=4)
        assert torch.allclose(together[index : index + 1], alone, atol=1e-6)
        target = region_mean(truth[index : index + 1], masks[index : index + 1])
        assert (region_mean(together[index : index + 1], masks[index : index + 1]) - target).abs().max() < 0.01


def test_a_flat_region_gets_the_ring_colour_without_exploding():
    ring_colour = torch.tensor([0.2, 0.6, 0.3]).view(1, 3, 1, 1)
    picture = ring_colour.expand(1, 3, 100, 120).clone()
    mask = box_mask()
    picture[:, :, mask[0, 0] > 0.5] = torch.tensor([0.9, 0.1, 0.1]).view(3, 1)
    result = colour_match(picture, mask, 1.0)
    assert torch.allclose(region_mean(result, mask), ring_colour.flatten(), atol=0.01)


def test_nothing_to_match_against_and_bad_inputs():
    picture, full = texture(), torch.ones(1, 1, 100, 120)
    with pytest.warns(UserWarning, match="no ring"):
        assert torch.equal(colour_match(picture, full, 1.0), picture)
    assert torch.equal(colour_match(picture, torch.zeros(1, 1, 100, 120), 1.0), picture)
    with pytest.raises(ValueError, match="0..1"):
        colour_match(picture, box_mask(), 1.5)
    with pytest.raises(ValueError, match="edit_mask"):
        colour_match(picture, torch.ones(1, 1, 10, 10), 1.0)
    with pytest.raises(ValueError, match="ring"):
        colour_match(picture, box_mask(), 1.0, ring=0)
