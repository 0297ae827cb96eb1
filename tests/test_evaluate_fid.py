"""CLIP-feature FID: the Frechet distance on known distributions, and on pictures through a tower."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pbe_core.evaluate import clip_fid, frechet_distance, toy_agreement
from pbe_core.train.toy import make_scene


def gaussian(n: int, d: int, seed: int, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * std + mean


def test_identical_sets_are_at_distance_zero():
    features = gaussian(200, 16, 0)
    assert abs(frechet_distance(features, features)) < 1e-8


def test_a_mean_shift_adds_its_squared_length():
    a = gaussian(500, 8, 1)
    shift = torch.tensor([3.0] + [0.0] * 7, dtype=torch.float64)
    assert frechet_distance(a, a + shift) == pytest.approx(9.0, abs=1e-8)


def test_two_gaussians_match_the_closed_form():
    # N(0, I) against N(0, 4 I) in d dimensions: tr(I + 4I - 2 * 2I) = d
    d = 6
    distance = frechet_distance(gaussian(20_000, d, 2), gaussian(20_000, d, 3, std=2.0))
    assert distance == pytest.approx(d, rel=0.05)
    same = frechet_distance(gaussian(20_000, d, 4), gaussian(20_000, d, 5))
    assert 0 <= same < 0.01


def test_fewer_samples_than_dimensions_stays_finite():
    a, b = gaussian(10, 64, 6), gaussian(12, 64, 7, mean=1.0)
    distance = frechet_distance(a, b)
    assert math.isfinite(distance) and distance > 0


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(torch.zeros(4, 3), torch.zeros(4, 5))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(torch.zeros(1, 3), torch.zeros(4, 3))


def test_clip_fid_tells_apart_sets_of_pictures(tiny):
    scenes = [make_scene(seed).image for seed in range(24)]
    others = [make_scene(seed).image for seed in range(24, 48)]
    flat = [np.full((64, 64, 3), (seed * 37) % 256, dtype=np.uint8) for seed in range(24)]
    assert abs(clip_fid(scenes, scenes, tiny.encoder)) < 1e-4
    alike, unlike = clip_fid(scenes, others, tiny.encoder), clip_fid(scenes, flat, tiny.encoder)
    assert 0 < alike < unlike


def test_toy_agreement_reads_colour_and_shape():
    scene = make_scene(0, objects=1)
    obj = scene.objects[0]
    pixels = torch.from_numpy(scene.image).permute(2, 0, 1).float()[None] / 255
    mask = torch.from_numpy((obj.mask > 0.01).astype(np.float32))[None, None]
    assert toy_agreement(pixels, mask, [obj.colour], [obj.shape]) == {"colour": 1.0, "shape": 1.0, "count": 1}
    wrong = toy_agreement(pixels, mask, [(obj.colour + 1) % 6], [(obj.shape + 1) % 6])
    assert wrong["colour"] == 0.0 and wrong["shape"] == 0.0
    grey = torch.full_like(pixels, 0.5)
    assert toy_agreement(grey, mask, [obj.colour], [obj.shape])["colour"] == 0.0
