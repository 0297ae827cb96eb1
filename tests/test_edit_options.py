"""The edit's issue-11 options through the API and the CLI: colour match and best of N."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pbe_core.cli import main
from pbe_core.colour import rgb_to_lab
from pbe_core.pipeline import PaintByExample

SIZE = 64
BOX = (16, 20, 44, 52)


def scene() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.normal(128, 20, (SIZE, SIZE, 3)).clip(0, 255).astype(np.uint8))


def box_mask() -> Image.Image:
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, BOX)
    return mask


def exemplar() -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def pipe(tiny):
    return PaintByExample(tiny, device="cpu", dtype=torch.float32)


def lab_mean(picture: torch.Tensor, where: np.ndarray) -> torch.Tensor:
    return rgb_to_lab(picture[None])[0][:, torch.from_numpy(where)].mean(dim=-1)


def test_colour_match_moves_the_region_towards_its_surroundings(pipe):
    options = dict(steps=2, sampler="ddim", region="full", seed=1, feather=3)
    plain = pipe.run(scene(), box_mask(), exemplar(), **options).images[0]
    matched = pipe.run(scene(), box_mask(), exemplar(), colour_match=1.0, **options).images[0]
    x0, y0, x1, y1 = BOX
    inside = np.zeros((SIZE, SIZE), bool)
    inside[y0:y1, x0:x1] = True
    outside = np.ones((SIZE, SIZE), bool)
    outside[y0 - 3 : y1 + 3, x0 - 3 : x1 + 3] = False
    assert torch.equal(plain[:, torch.from_numpy(outside)], matched[:, torch.from_numpy(outside)])
    ring = np.zeros((SIZE, SIZE), bool)
    ring[y0 - 12 : y1 + 12, x0 - 12 : x1 + 12] = True
    ring &= outside
    surroundings = lab_mean(plain, ring)
    before = (lab_mean(plain, inside) - surroundings).abs().sum()
    after = (lab_mean(matched, inside) - surroundings).abs().sum()
    assert before > 5 and after < before / 5


def test_colour_match_strength_is_checked_before_any_work(pipe):
    with pytest.raises(ValueError, match="colour_match"):
        pipe.edit(scene(), box_mask(), exemplar(), steps=1, colour_match=2.0)


def test_cli_colour_match(tmp_path, tiny_paths):
    for name, picture in (("scene.png", scene()), ("mask.png", box_mask()), ("exemplar.png", exemplar())):
        picture.save(tmp_path / name)
    common = [
        "edit", "--model", str(tiny_paths["safetensors"]), "--image", str(tmp_path / "scene.png"),
        "--mask", str(tmp_path / "mask.png"), "--exemplar", str(tmp_path / "exemplar.png"),
        "--steps", "1", "--resolution", "64", "--quiet",
    ]
    assert main([*common, "--out", str(tmp_path / "plain.png")]) == 0
    assert main([*common, "--out", str(tmp_path / "matched.png"), "--colour-match", "1"]) == 0
    plain, matched = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("plain", "matched"))
    assert not np.array_equal(plain, matched)
    assert main([*common, "--out", str(tmp_path / "bad.png"), "--colour-match", "1.5"]) == 2
    assert not (tmp_path / "bad.png").exists()


def test_cli_candidates(tmp_path, tiny_paths, capsys):
    for name, picture in (("scene.png", scene()), ("mask.png", box_mask()), ("exemplar.png", exemplar())):
        picture.save(tmp_path / name)
    common = [
        "edit", "--model", str(tiny_paths["safetensors"]), "--image", str(tmp_path / "scene.png"),
        "--mask", str(tmp_path / "mask.png"), "--exemplar", str(tmp_path / "exemplar.png"),
        "--steps", "1", "--resolution", "64", "--quiet", "--seed", "5", "--candidates", "3",
    ]
    assert main([*common, "--out", str(tmp_path / "all.png"), "--keep-all"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("candidate")]
    assert len(lines) == 3
    scores = [float(line.split("score ")[1].split(" ")[0]) for line in lines]
    assert scores == sorted(scores, reverse=True)
    assert sorted(int(line.split("seed ")[1].split(",")[0]) for line in lines) == [5, 6, 7]
    written = [np.asarray(Image.open(tmp_path / f"all-{rank}.png")) for rank in range(3)]
    assert not np.array_equal(written[0], written[1])
    assert main([*common, "--out", str(tmp_path / "best.png")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "best.png")), written[0])
    assert not (tmp_path / "best-0.png").exists()
