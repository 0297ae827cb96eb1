"""The toy model's cache, `python -m pbe_core demo` and `evaluate` through the real entry point,
on a pre-seeded cache (a toy-architecture model written by the fixture), so CI trains nothing here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pbe_core.checkpoint import load_models, save_single_file, weights_of
from pbe_core.train.toy import toy_cases
from pbe_core.train.toy_model import ToyRecipe, cache_path, untrained_models


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """$PBE_MODEL_DIR holding the toy model for the default recipe, as a first demo leaves it."""
    root = tmp_path_factory.mktemp("models")
    previous = os.environ.get("PBE_MODEL_DIR")
    os.environ["PBE_MODEL_DIR"] = str(root)
    try:
        path = cache_path(ToyRecipe())
    finally:
        if previous is None:
            del os.environ["PBE_MODEL_DIR"]
        else:
            os.environ["PBE_MODEL_DIR"] = previous
    save_single_file(weights_of(untrained_models()), path)
    return root, path


ROOT = Path(__file__).resolve().parents[1]


def run_cli(args, model_dir, timeout=600):
    env = {**os.environ, "PBE_MODEL_DIR": str(model_dir), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pbe_core", *args], capture_output=True, text=True, timeout=timeout,
        env=env, cwd=ROOT,
    )


def test_cache_path_follows_the_model_dir_and_the_recipe(model_dir):
    root, path = model_dir
    assert path.parent == root / "toy" and path.suffix == ".safetensors"
    assert cache_path(ToyRecipe(seed=1)).name != cache_path(ToyRecipe()).name
    models = load_models(path)  # the single file in original key names, as every loader reads it
    assert models.unet.config.in_channels == 9 and models.encoder.config.image_size == 32


def test_evaluate_cli_reports_clip_score_fid_and_toy_agreement(model_dir, tmp_path):
    root, path = model_dir
    results, masks, exemplars, references = (tmp_path / n for n in ("results", "masks", "exemplars", "refs"))
    for folder in (results, masks, exemplars, references):
        folder.mkdir()
    for index, case in enumerate(toy_cases(4)):
        Image.fromarray(case.scene).save(results / f"{index}.png")
        Image.fromarray(case.mask).save(masks / f"{index}.png")
        Image.fromarray(case.exemplar).save(exemplars / f"{index}.png")
        Image.fromarray(case.scene[::-1]).save(references / f"{index}.png")
    done = run_cli([
        "evaluate", "--model", str(path), "--results", str(results), "--masks", str(masks),
        "--exemplars", str(exemplars), "--references", str(references), "--toy", "4", "--steps", "2",
    ], root)
    assert done.returncode == 0, done.stderr
    assert "region CLIP score" in done.stdout and "CLIP-FID" in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith("model ")]
    assert len(rows) == 3  # guidance 1, 3, 5
    nothing = run_cli(["evaluate", "--model", str(path)], root)
    assert nothing.returncode == 2 and "nothing to evaluate" in nothing.stderr


def test_demo_reuses_the_cached_toy_model_and_writes_every_picture(model_dir, tmp_path):
    root, path = model_dir
    before = path.stat().st_mtime_ns
    done = run_cli(["demo", "--out", str(tmp_path), "--cases", "2", "--steps", "2"], root)
    assert done.returncode == 0, done.stderr
    assert path.stat().st_mtime_ns == before  # loaded, not trained again
    assert f"toy model {path}" in done.stdout and done.stdout.count("-> painted") == 2
    for name in ("scene.png", "mask.png", "exemplar.png", "result.png"):
        assert Image.open(tmp_path / name).size[0] > 0
    scene, result = (np.asarray(Image.open(tmp_path / n)) for n in ("scene.png", "result.png"))
    ys, xs = np.nonzero(np.asarray(Image.open(tmp_path / "mask.png")))
    outside = np.ones(scene.shape[:2], dtype=bool)  # beyond the mask's box and the feather
    outside[max(ys.min() - 8, 0) : ys.max() + 9, max(xs.min() - 8, 0) : xs.max() + 9] = False
    assert result.shape == scene.shape and np.array_equal(result[outside], scene[outside])
    assert Image.open(tmp_path / "overview.png").size == (3 * 64 * 4 + 32, 2 * (64 * 4 + 8) + 8)
