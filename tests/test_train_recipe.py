"""The training recipe, each step alone: masks, crops, exemplars, dropout, trained and frozen parts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pbe_core import prepare
from pbe_core.train import TrainConfig, build_sample
from pbe_core.train.augment import Augmentation, augment_exemplar
from pbe_core.train.loop import drop_context
from pbe_core.train.samples import Recipe, extend_box, irregular_mask, object_box, square_window
from pbe_core.train.trainer import Trainer


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors on a shared 2-core machine run many times faster on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def scene(seed: int = 0, size=(96, 128)) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A noisy grey picture with one saturated red rectangle (the object)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(90, 160, (*size, 3), dtype=np.uint8)
    box = (40, 30, 70, 62)
    pixels[box[1] : box[3], box[0] : box[2]] = (230, 20, 20)
    return Image.fromarray(pixels), box


def test_extended_box_contains_the_box_and_stays_in_the_picture():
    rng = np.random.default_rng(0)
    for _ in range(200):
        x0, y0 = rng.integers(0, 60, 2)
        box = (int(x0), int(y0), int(x0 + rng.integers(1, 40)), int(y0 + rng.integers(1, 30)))
        ex = extend_box(box, (100, 90), 0.4, rng)
        assert ex[0] <= box[0] and ex[1] <= box[1] and ex[2] >= box[2] and ex[3] >= box[3]
        assert ex[0] >= 0.6 * box[0] - 1 and ex[2] <= box[2] + 0.4 * (100 - box[2]) + 1
        assert ex[1] >= 0 and ex[3] <= 90


def test_irregular_masks_stay_inside_the_extended_box_and_cover_the_box_centre():
    rng = np.random.default_rng(1)
    for _ in range(50):
        box = (30, 20, 70, 60)
        ex = extend_box(box, (100, 80), 0.4, rng)
        mask = np.asarray(irregular_mask(box, ex, (100, 80), 18, 5, rng)) > 127
        outside = np.ones_like(mask)
        outside[ex[1] : ex[3], ex[0] : ex[2]] = False
        assert not mask[outside].any()
        assert mask[40, 50]  # the box's centre is always edited
        assert mask.sum() > 0.5 * 40 * 40


def test_square_window_contains_the_extended_box():
    rng = np.random.default_rng(2)
    for _ in range(200):
        ex = (int(rng.integers(0, 50)), int(rng.integers(0, 30)), 0, 0)
        ex = (ex[0], ex[1], ex[0] + int(rng.integers(1, 60)), ex[1] + int(rng.integers(1, 50)))
        x0, y0, x1, y1 = square_window(ex, (128, 96), 0.6, rng)
        assert x1 - x0 == y1 - y0 <= 96
        assert x0 <= ex[0] and y0 <= ex[1] and x1 >= ex[2] and y1 >= ex[3]
        assert x0 >= 0 and y0 >= 0 and x1 <= 128 and y1 <= 96


def test_sample_masks_inside_the_extended_box_and_uses_prepares_conventions():
    picture, box = scene()
    for seed in range(12):
        sample = build_sample(picture, box, np.random.default_rng(seed), resolution=64, exemplar_size=32)
        assert sample.image.shape == (3, 64, 64) and sample.exemplar.shape == (3, 32, 32)
        assert set(sample.keep.unique().tolist()) <= {0.0, 1.0}  # binarised by prepare
        edited = sample.keep[0] == 0
        # the extended box, in crop coordinates (the crop is square: one scale)
        wx0, wy0, wx1, _ = sample.window
        scale = 64 / (wx1 - wx0)
        ex0, ey0, ex1, ey1 = sample.extended
        rows = torch.arange(64)[:, None] + 0.5
        cols = torch.arange(64)[None, :] + 0.5
        inside = (
            (cols >= (ex0 - wx0) * scale - 1) & (cols <= (ex1 - wx0) * scale + 1)
            & (rows >= (ey0 - wy0) * scale - 1) & (rows <= (ey1 - wy0) * scale + 1)
        )
        assert edited.any() and not (edited & ~inside).any()
        assert torch.equal(sample.masked, sample.image * sample.keep)
        expected = prepare.latent_keep_mask(sample.keep[None], (8, 8))[0]
        assert torch.equal(sample.latent_keep, expected)


def test_the_exemplar_keeps_the_object():
    """Across augmentations the exemplar stays mostly the object's red, not the grey scene."""
    picture, box = scene()
    mean = torch.tensor(prepare.CLIP_MEAN)[:, None, None]
    std = torch.tensor(prepare.CLIP_STD)[:, None, None]
    for seed in range(10):
        sample = build_sample(picture, box, np.random.default_rng(seed), resolution=64, exemplar_size=32)
        pixels = sample.exemplar * std + mean
        red = (pixels[0] > 0.7) & (pixels[1] < 0.3)
        assert red.float().mean() > 0.5


def test_augmentation_changes_the_picture_and_each_part_can_be_switched_off():
    rng = np.random.default_rng(3)
    picture = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    off = Augmentation(hflip_p=0, rotate_degrees=0, blur_p=0, elastic_p=0)
    assert np.array_equal(np.asarray(augment_exemplar(picture, rng, off)), np.asarray(picture))
    flip = Augmentation(hflip_p=1, rotate_degrees=0, blur_p=0, elastic_p=0)
    assert np.array_equal(np.asarray(augment_exemplar(picture, rng, flip)), np.asarray(picture)[:, ::-1])
    changed = [not np.array_equal(np.asarray(augment_exemplar(picture, rng)), np.asarray(picture)) for _ in range(5)]
    assert all(changed)


def test_object_box_from_masks_and_boxes():
    mask = Image.new("L", (50, 40), 0)
    mask.paste(255, (5, 6, 20, 30))
    assert object_box(mask, (50, 40)) == (5, 6, 20, 30)
    assert object_box((5.2, 6, 80, 30), (50, 40)) == (5, 6, 50, 30)
    assert object_box(Image.new("L", (50, 40), 0), (50, 40)) is None
    assert object_box((10, 10, 10, 20), (50, 40)) is None
    with pytest.raises(ValueError, match="object mask is 10x10"):
        object_box(Image.new("L", (10, 10), 255), (50, 40))


def test_irregular_probability_and_recipe_validation():
    picture, box = scene()
    rng = np.random.default_rng(4)
    always_box = Recipe(irregular_p=0.0)
    for _ in range(5):
        sample = build_sample(picture, box, rng, resolution=64, exemplar_size=32, recipe=always_box)
        edited = (sample.keep[0] == 0).nonzero()
        (y0, x0), (y1, x1) = edited.min(0).values, edited.max(0).values
        rectangle = sample.keep[0, y0 : y1 + 1, x0 : x1 + 1].clone()
        rectangle[[0, 0, -1, -1], [0, -1, 0, -1]] = 0  # resizing may round a corner pixel off
        assert (rectangle == 0).all()  # a filled rectangle
    with pytest.raises(ValueError, match="irregular_p"):
        Recipe(irregular_p=1.5)
    with pytest.raises(ValueError, match="multiple of 8"):
        build_sample(picture, box, rng, resolution=60)


def test_unconditional_dropout_rate_is_about_twenty_percent():
    context = torch.ones(20_000, 1, 4)
    uncond = torch.zeros(1, 1, 4)
    dropped = drop_context(context, uncond.expand(20_000, -1, -1), 0.2, torch.Generator().manual_seed(0))
    rate = (dropped[:, 0, 0] == 0).float().mean().item()
    assert abs(rate - 0.2) < 0.015  # 20,000 draws: std 0.003
    assert set(dropped.unique().tolist()) == {0.0, 1.0}


def test_frozen_parts_stay_and_trained_parts_move(tiny):
    import copy

    models = copy.deepcopy(tiny)
    picture, box = scene()
    before = {
        "vae": copy.deepcopy(models.vae.state_dict()),
        "clip": copy.deepcopy(models.encoder.transformer.state_dict()),
        "unet": copy.deepcopy(models.unet.state_dict()),
        "mapper": copy.deepcopy(models.encoder.mapper.state_dict()),
        "proj_out": copy.deepcopy(models.encoder.proj_out.state_dict()),
        "final_ln": copy.deepcopy(models.encoder.final_ln.state_dict()),
        "learnable_vector": models.encoder.learnable_vector.detach().clone(),
    }
    # uncond_p 0.5 so that the learned vector is used, and so trained, in this short run
    config = TrainConfig(steps=2, resolution=64, batch_size=2, lr=1e-3, warmup_steps=0, uncond_p=0.5)
    trainer = Trainer(models, [(picture, box)] * 4, config)
    assert not any(p.requires_grad for p in models.vae.parameters())
    assert not any(p.requires_grad for p in models.encoder.transformer.parameters())
    assert not models.vae.training and not models.encoder.transformer.training
    trainer.run()

    def moved(old, new):
        return any(not torch.equal(old[k], new[k]) for k in old)

    assert not moved(before["vae"], models.vae.state_dict())
    assert not moved(before["clip"], models.encoder.transformer.state_dict())
    assert moved(before["unet"], models.unet.state_dict())
    assert moved(before["mapper"], models.encoder.mapper.state_dict())
    assert moved(before["proj_out"], models.encoder.proj_out.state_dict())
    assert moved(before["final_ln"], models.encoder.final_ln.state_dict())
    assert not torch.equal(before["learnable_vector"], models.encoder.learnable_vector)
    assert not any(p.requires_grad for p in models.unet.parameters())  # left frozen again


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown parts"):
        TrainConfig(train=("clip",))
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="int8")
    with pytest.raises(ValueError, match="multiple of 8"):
        TrainConfig(resolution=100)
