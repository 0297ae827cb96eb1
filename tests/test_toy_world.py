"""The toy world's data: deterministic scenes whose masks are their objects, and the readers
(dominant colour, shape template) the toy-world agreement is measured with."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pbe_core.train import build_sample
from pbe_core.train.toy import (
    COLOURS,
    HELD_OUT,
    SCENE_SIZE,
    SHAPES,
    classify_shape,
    colour_mask,
    dominant_colour,
    make_scene,
    object_pixels_mask,
    render_shape,
    toy_cases,
)
from pbe_core.train.toy_model import ToyScenes


def test_scenes_are_deterministic_in_their_seed():
    first, again, other = make_scene(3), make_scene(3), make_scene(4)
    assert np.array_equal(first.image, again.image)
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(first.objects, again.objects, strict=True))
    assert not np.array_equal(first.image, other.image)


@pytest.mark.parametrize("seed", range(12))
def test_each_mask_is_its_object(seed):
    scene = make_scene(seed)
    rgb = scene.image / 255.0
    covered = np.zeros(rgb.shape[:2], dtype=bool)
    for obj in scene.objects:
        inside = obj.mask > 0.99
        assert inside.sum() > 10
        # every fully covered pixel has the object's colour, and the mask is where that colour is
        assert dominant_colour(rgb, inside) == obj.colour
        assert colour_mask(rgb, inside, obj.colour)[inside].mean() > 0.98
        assert classify_shape(obj.mask > 0.5) == obj.shape
        covered |= obj.mask > 0.01
    # the background is muted: (almost) no object-like pixel outside the objects
    assert object_pixels_mask(rgb)[~covered].mean() < 0.01
    assert len({o.colour for o in scene.objects}) >= 1 and len(scene.objects) in (1, 2)


def test_objects_can_be_asked_for_and_do_not_overlap():
    for seed in range(20):
        scene = make_scene(seed, objects=2, shape=2, colour=4)
        assert (scene.objects[0].shape, scene.objects[0].colour) == (2, 4)
        if len(scene.objects) == 2:
            assert (np.minimum(scene.objects[0].mask, scene.objects[1].mask) > 0).sum() == 0


def test_every_shape_and_colour_occurs():
    scenes = [make_scene(seed) for seed in range(60)]
    assert {o.shape for s in scenes for o in s.objects} == set(range(len(SHAPES)))
    assert {o.colour for s in scenes for o in s.objects} == set(range(len(COLOURS)))


def test_shape_classifier_tells_every_shape_at_any_angle():
    for shape in range(len(SHAPES)):
        for angle in (-30, -10, 0, 17, 30):
            blob = render_shape(shape, (20.3, 18.7), 11.0, angle, (40, 40)) > 0.5
            assert classify_shape(blob) == shape, (SHAPES[shape], angle)
    assert classify_shape(np.zeros((8, 8), dtype=bool)) is None


def test_a_grey_region_has_no_dominant_colour():
    rgb = np.full((16, 16, 3), 0.5)
    assert dominant_colour(rgb, np.ones((16, 16), dtype=bool)) is None


def test_held_out_cases_swap_the_colour_and_cover_the_object():
    cases = toy_cases(10)
    for index, case in enumerate(cases):
        target = make_scene(HELD_OUT + 2 * index).objects[0]
        assert case.colour != target.colour
        assert (case.mask[target.mask > 0.01] == 255).all()
        assert dominant_colour(case.exemplar / 255.0, np.ones(case.exemplar.shape[:2], dtype=bool)) == case.colour


def test_toy_scenes_feed_the_training_recipe():
    scenes = ToyScenes(5)
    picture, mask = scenes[2]
    assert isinstance(picture, Image.Image) and picture.size == (SCENE_SIZE, SCENE_SIZE) and mask.mode == "L"
    with pytest.raises(IndexError):
        scenes[5]
    sample = build_sample(picture, mask, np.random.default_rng(0), resolution=SCENE_SIZE, exemplar_size=32)
    assert sample.image.shape == (3, SCENE_SIZE, SCENE_SIZE) and sample.exemplar.shape == (3, 32, 32)
    # the object is inside the edited region of the sample
    assert torch.all(sample.keep[0] <= 1) and (sample.keep == 0).any()
