"""The toy-world effect, trained from nothing in CI: after the project's recipe, the exemplar
steers the edit's colour; the shuffled-exemplar and untrained controls stay near chance (1/6).

A shortened recipe (fewer VAE and Paint by Example steps than the demo's model) so that it fits
CI in a few minutes; bench/toy_world.py measures the demo's full model the same way.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pbe_core.evaluate import toy_world_agreement
from pbe_core.pipeline import PaintByExample
from pbe_core.train.toy import toy_cases
from pbe_core.train.toy_model import ToyRecipe, train_toy, untrained_models

CHANCE = 1 / 6


@pytest.fixture(scope="module")
def trained():
    base = ToyRecipe()
    recipe = dataclasses.replace(
        base, vae_steps=800, clip_steps=300, train=dataclasses.replace(base.train, steps=400)
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    try:
        return train_toy(recipe, report=lambda _line: None)
    finally:
        torch.set_num_threads(threads)


def test_exemplar_steers_the_colour_and_guidance_strengthens_it(trained):
    cases = toy_cases(48)
    pipe = PaintByExample(trained)
    weak, strong = (toy_world_agreement(pipe, cases, g, steps=15)["colour"] for g in (1.0, 5.0))
    shuffled = toy_world_agreement(pipe, cases, 5.0, shuffle=True, steps=15)["colour"]
    untrained = toy_world_agreement(PaintByExample(untrained_models()), cases, 5.0, steps=15)["colour"]
    assert strong >= 2.5 * CHANCE, (weak, strong, shuffled)
    assert strong > weak
    assert shuffled <= 2 * CHANCE and untrained <= 2 * CHANCE, (shuffled, untrained)
