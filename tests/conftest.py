"""Shared fixtures: tiny random-weight models, written once per session in every layout."""

from __future__ import annotations

import pytest

from pbe_core.checkpoint import weights_of
from pbe_core.testing import tiny_models, write_layout

LAYOUTS = ("ckpt", "safetensors", "diffusers")


@pytest.fixture(scope="session")
def tiny():
    """Tiny models with every parameter random (seed 0)."""
    return tiny_models(seed=0)


@pytest.fixture(scope="session")
def tiny_paths(tiny, tmp_path_factory):
    """The tiny models written in each layout: {"ckpt": path, "safetensors": path, "diffusers": dir}."""
    root = tmp_path_factory.mktemp("tiny-models")
    weights = weights_of(tiny)
    return {layout: write_layout(weights, layout, root) for layout in LAYOUTS}
