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


# ---------------------------------------------------------------------------------------------
# What the Comfy Registry and ComfyUI-Manager read

ROOT = ENTRY.parent


@pytest.fixture(scope="module")
def comfy_config() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["comfy"]


def test_registry_metadata_is_complete(comfy_config):
    from PIL import Image

    for key in ("PublisherId", "DisplayName", "Icon", "Banner", "requires-comfyui"):
        assert comfy_config.get(key), f"[tool.comfy] {key} is empty"
    assert isinstance(comfy_config["includes"], list)
    prefix = "https://raw.githubusercontent.com/paint-by-example-nodes/paint-by-example-nodes/main/"
    for key in ("Icon", "Banner"):
        assert comfy_config[key].startswith(prefix)
        assert (ROOT / comfy_config[key].removeprefix(prefix)).is_file()
    with Image.open(ROOT / comfy_config["Icon"].removeprefix(prefix)) as icon:
        assert icon.width == icon.height <= 400


def test_registry_archive_leaves_out_tests_and_benches():
    ignored = (ROOT / ".comfyignore").read_text().split()
    assert {"tests/", "bench/", ".ci/", ".github/"} <= set(ignored)
    workflow = (ROOT / ".github" / "workflows" / "publish.yml").read_text()
    assert "Comfy-Org/publish-node-action@v1" in workflow
    assert "secrets.REGISTRY_ACCESS_TOKEN" in workflow


def test_node_code_never_downloads_installs_or_evaluates_strings():
    import re

    forbidden = re.compile(
        r"(?<![.\w])(eval|exec)\(|^\s*(import|from)\s+(subprocess|urllib|requests|http|socket)\b"
        r"|pbe_core\.download|\bfrom \.+pbe_core import .*\bdownload\b|pip install",
        re.MULTILINE,
    )
    sources = [ENTRY, *sorted((ROOT / "nodes").glob("*.py"))]
    for path in sources:
        found = forbidden.search(path.read_text())
        assert found is None, f"{path.name}: {found.group(0)!r}"
    for path in sorted((ROOT / "pbe_core").rglob("*.py")):  # the CLI's downloader aside
        found = re.search(r"(?<![.\w])(eval|exec)\(|import subprocess", path.read_text())
        assert found is None, f"{path.name}: {found.group(0)!r}"
