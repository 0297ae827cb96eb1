"""pbe_core.evaluate: the region CLIP score on the tiny model's CLIP tower and on others."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

from pbe_core import prepare
from pbe_core.evaluate import image_features, region_clip_score, region_crops

BOX = (10, 6, 42, 30)  # x0, y0, x1, y1: 32 x 24, the exemplar's size


def exemplar_picture(seed: int = 7) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))


def scene_with(picture: Image.Image | None, seed: int = 0) -> torch.Tensor:
    """A 48 x 64 random scene with `picture` pasted into BOX."""
    scene = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(seed))
    scene = (scene * 255).round() / 255
    if picture is not None:
        x0, y0, x1, y1 = BOX
        scene[..., y0:y1, x0:x1] = prepare.image_to_tensor(picture)
    return scene


def box_mask() -> torch.Tensor:
    mask = torch.zeros(1, 1, 48, 64)
    x0, y0, x1, y1 = BOX
    mask[..., y0:y1, x0:x1] = 1
    return mask


@pytest.fixture(scope="module")
def tower(tiny):
    return tiny.encoder.transformer


def test_the_exemplar_pasted_into_the_region_scores_100(tiny):
    score = region_clip_score(scene_with(exemplar_picture()), box_mask(), exemplar_picture(), tiny.encoder)
    assert score.shape == (1,)
    assert score.item() == pytest.approx(100, abs=1e-3)


def test_ranks_candidates_in_one_batch_and_matches_one_by_one(tower):
    candidates = torch.cat([scene_with(None, 1), scene_with(exemplar_picture()), scene_with(exemplar_picture(8), 2)])
    scores = region_clip_score(candidates, box_mask(), exemplar_picture(), tower)
    assert scores.shape == (3,)
    assert scores.argmax().item() == 1
    assert scores[0] < 99.9 and scores[2] < 99.9
    one_by_one = torch.cat([region_clip_score(c[None], box_mask(), exemplar_picture(), tower) for c in candidates])
    assert torch.allclose(scores, one_by_one, atol=1e-4)


def test_only_the_masked_box_counts(tower):
    a, b = scene_with(exemplar_picture(), seed=3), scene_with(exemplar_picture(), seed=4)
    assert not torch.equal(a, b)  # different surroundings, same region
    scores = region_clip_score(torch.cat([a, b]), box_mask(), exemplar_picture(8), tower)
    assert scores[0].item() == pytest.approx(scores[1].item(), abs=1e-4)


def test_is_100_times_the_cosine_of_the_pooled_features(tower):
    candidate = scene_with(None, 5)
    x0, y0, x1, y1 = BOX
    region = prepare.to_pil(candidate[0, :, y0:y1, x0:x1])
    with torch.no_grad():
        pooled = tower(pixel_values=torch.cat([
            prepare.prepare_exemplar(exemplar_picture(), size=32),
            prepare.prepare_exemplar(region, size=32),
        ])).pooler_output
    expected = 100 * torch.nn.functional.cosine_similarity(pooled[0], pooled[1], dim=0)
    score = region_clip_score(candidate, box_mask(), exemplar_picture(), tower)
    assert score.item() == pytest.approx(expected.item(), abs=1e-3)


def test_any_other_tower(tower):
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, image_size=48, patch_size=16, projection_dim=24)
    torch.manual_seed(0)
    projected = CLIPVisionModelWithProjection(config).eval()
    plain = CLIPVisionModel(config).eval()
    pixels = prepare.prepare_exemplar(exemplar_picture(), size=48)
    assert image_features(projected, pixels).shape == (1, 24)  # the projection when there is one
    assert image_features(plain, pixels).shape == (1, 32)
    candidates = torch.cat([scene_with(None, 1), scene_with(exemplar_picture())])
    for other in (projected, plain):
        scores = region_clip_score(candidates, box_mask(), exemplar_picture(), other)
        assert scores[1].item() == pytest.approx(100, abs=1e-3) and scores[0] < 99.9
    # a plain callable with an explicit size
    mean_colour = lambda pixels: pixels.mean(dim=(2, 3))  # noqa: E731
    scores = region_clip_score(candidates, box_mask(), exemplar_picture(), mean_colour, size=16)
    assert scores[1].item() == pytest.approx(100, abs=1e-3)
    with pytest.raises(ValueError, match="size="):
        region_clip_score(candidates, box_mask(), exemplar_picture(), mean_colour)


def test_exemplar_mask_scores_the_object_only(tower):
    picture = exemplar_picture()
    object_mask = Image.new("L", picture.size, 0)
    object_mask.paste(255, (8, 4, 24, 20))
    grey_exemplar = prepare.image_to_tensor(picture)[..., 4:20, 8:24]
    object_only = prepare.to_pil(grey_exemplar[0])
    scores = region_clip_score(scene_with(object_only.resize((32, 24))), box_mask(), picture, tower,
                               exemplar_mask=object_mask)
    plain = region_clip_score(scene_with(object_only.resize((32, 24))), box_mask(), picture, tower)
    assert scores.item() > plain.item()


def test_bad_inputs():
    with pytest.raises(ValueError, match="marks nothing"):
        region_crops(scene_with(None), torch.zeros(1, 1, 48, 64))
    with pytest.raises(ValueError, match="edit_mask is"):
        region_crops(scene_with(None), torch.ones(1, 1, 24, 32))
    with pytest.raises(ValueError, match="batch sizes"):
        region_crops(torch.rand(3, 3, 48, 64), box_mask().expand(2, -1, -1, -1))
