"""The ComfyUI pack's entry point without ComfyUI: it registers nothing, and its check of the
host's version gives an older ComfyUI a message instead of a traceback."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ENTRY = Path(__file__).resolve().parents[1] / "__init__.py"


@pytest.fixture(scope="module")
def pack():
    spec = importlib.util.spec_from_file_location("pbe_comfyui_pack", ENTRY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_outside_comfyui_nothing_is_registered(pack):
    assert not hasattr(pack, "comfy_entrypoint")
    assert not hasattr(pack, "NODE_CLASS_MAPPINGS")  # V1 mappings would hide the V3 entry point
    assert pack.WEB_DIRECTORY == "./web"


def test_minimum_matches_requires_comfyui(pack):
    text = (ENTRY.parent / "pyproject.toml").read_text()
    needed = ".".join(map(str, pack.MINIMUM_COMFYUI))
    assert f'requires-comfyui = ">={needed}"' in text


@pytest.mark.parametrize(
    ("version", "has_v3_api", "phrases"),
    [
        ("0.3.40", False, ["0.3.64 or newer", "this ComfyUI is 0.3.40", "Update ComfyUI"]),
        ("0.3.63", True, ["0.3.64 or newer", "this ComfyUI is 0.3.63"]),
        (None, False, ["0.3.64 or newer", "no version number"]),
    ],
)
def test_an_older_comfyui_is_told_what_to_update(pack, version, has_v3_api, phrases):
    message = pack.too_old_message(version, has_v3_api)
    for phrase in phrases:
        assert phrase in message


@pytest.mark.parametrize("version", ["0.3.64", "0.3.65", "0.4.0", "1.0.0rc1"])
def test_a_new_enough_comfyui_loads_the_nodes(pack, version):
    assert pack.too_old_message(version, True) is None
