"""The ComfyUI node pack against a real ComfyUI, driven over its HTTP API.

Finds ComfyUI through COMFYUI_DIR, or this repository sitting in `ComfyUI/custom_nodes/`, and
runs it with COMFYUI_PYTHON (default: this python); skipped otherwise. The server starts once
for the module, on the CPU, with `--base-directory` in a temporary folder that holds the pack
(symlinks to this repository), tiny models and small input pictures, so ComfyUI's own tree is
not touched. The API-format example workflows drive the runs.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from pbe_core import download
from pbe_core.checkpoint import load_models
from pbe_core.colour import rgb_to_lab
from pbe_core.evaluate import region_clip_score
from pbe_core.pipeline import PaintByExample
from pbe_core.testing import tiny_models, tiny_weights, write_layout

REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "comfyui-paint-by-example"
PACK_PARTS = ("__init__.py", "nodes", "pbe_core", "web", "example_workflows")
WORKFLOWS = REPO / "example_workflows"
SAVED_WORKFLOWS = REPO / "tests" / "comfyui_saved_workflows"  # as shipped with the V1 nodes
BASIC = "Paint by Example - edit in one node"
CROP_STITCH = "Paint by Example - crop, KSampler, stitch"
STOCK = "Paint by Example - stock KSampler chain"
COLOUR = "Paint by Example - colour match"
BEST_OF = "Paint by Example - best of 4 by CLIP score"
EXAMPLES = (BASIC, CROP_STITCH, STOCK, COLOUR, BEST_OF)
SAVED_EXAMPLES = (  # the V1-era examples, as tests/comfyui_saved_workflows keeps them
    "paint_by_example_basic",
    "paint_by_example_crop_stitch",
    "paint_by_example_stock_ksampler",
)
OUR_NODES = (
    "PaintByExampleModelLoader",
    "PaintByExampleLoraLoader",
    "PaintByExampleExemplarEncode",
    "PaintByExampleInpaintConditioning",
    "PaintByExampleEdit",
    "PaintByExampleCrop",
    "PaintByExampleStitch",
    "PaintByExampleGrowMask",
    "PaintByExampleMaskToBBox",
    "PaintByExampleColourMatch",
    "PaintByExampleRankByClipScore",
)
MODEL = "model.safetensors"
SHIPPED_NAME = download.LOCAL_NAMES["single"]  # the name the shipped workflows load
LORA = "pbe_lora.safetensors"
LORA_STRENGTH = 0.7
START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 180  # the CPU here is shared: a short run can wait its turn
PHOTO_EDIT = (slice(20, 44), slice(16, 40))  # rows, columns of the mask in the 64x64 photo
LARGE_EDIT = (slice(50, 70), slice(100, 124))  # in the 160x120 photo
FAST = {"steps": 2, "resolution": 64}  # tiny runs: the crop works at 64 px
PHOTO = "2"  # the id of the photo's LoadImage in every example
CUTOUT_OBJECT = (slice(8, 40), slice(6, 34))  # the opaque object of the cut-out exemplar


def find_comfyui() -> Path | None:
    if os.environ.get("COMFYUI_DIR"):
        return Path(os.environ["COMFYUI_DIR"])
    if REPO.parent.name == "custom_nodes" and (REPO.parent.parent / "main.py").is_file():
        return REPO.parent.parent
    return None


COMFYUI_DIR = find_comfyui()
pytestmark = pytest.mark.skipif(
    COMFYUI_DIR is None or not (COMFYUI_DIR / "main.py").is_file(),
    reason="no ComfyUI: set COMFYUI_DIR to a ComfyUI folder (and COMFYUI_PYTHON to its python), "
    "or put this pack in ComfyUI/custom_nodes/",
)


# ---------------------------------------------------------------------------------------------
# The server and its folders


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def install_pack(base: Path) -> None:
    """The pack as ComfyUI sees it, its parts linked to this repository."""
    pack = base / "custom_nodes" / PACK_NAME
    pack.mkdir(parents=True)
    for part in PACK_PARTS:
        (pack / part).symlink_to(REPO / part)


def write_models(models: Path) -> None:
    """The tiny model in every layout (the .ckpt under checkpoints/), and a foreign file."""
    from safetensors.torch import save_file

    weights = tiny_weights(0)
    write_layout(weights, "safetensors", models / "paint_by_example")
    write_layout(weights, "diffusers", models / "paint_by_example")
    write_layout(weights, "ckpt", models / "checkpoints")
    # where the README and `download --dir` put the weights, under that name
    shutil.copy(models / "checkpoints" / "model.ckpt", models / "paint_by_example" / SHIPPED_NAME)
    save_file(
        {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)},
        models / "paint_by_example" / "not_pbe.safetensors",
    )
    write_lora_and_merges(models)


def write_lora_and_merges(models: Path) -> None:
    """A Paint by Example LoRA of the tiny model (UNet adapters + encoder parts, as training
    writes it) in models/loras, and the tiny model with it merged at LORA_STRENGTH: all of it,
    and its UNet part alone."""
    from pbe_core.checkpoint import save_single_file, weights_of
    from pbe_core.train.loop import ENCODER_PARTS
    from pbe_core.train.lora import LoRAAdapters, apply_lora, save_lora

    trained = tiny_models(0)
    adapters = LoRAAdapters(trained.unet, rank=2, targets=("attention", "proj"))
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for layer in adapters.layers:  # as if trained: adapters that change the output
            layer.up.weight.copy_(0.5 * torch.randn(layer.up.weight.shape, generator=generator))
        for name, parameter in trained.encoder.named_parameters():
            if name.split(".")[0] in ENCODER_PARTS:
                parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))
    (models / "loras").mkdir(exist_ok=True)
    lora = save_lora(adapters, trained, models / "loras" / LORA, ENCODER_PARTS)
    merged = apply_lora(tiny_models(0), lora, LORA_STRENGTH)
    save_single_file(weights_of(merged), models / "paint_by_example" / "merged_lora.safetensors")
    unet_only = dataclasses.replace(merged, encoder=tiny_models(0).encoder)
    save_single_file(weights_of(unet_only), models / "paint_by_example" / "merged_unet.safetensors")


def smooth_picture(height: int, width: int, seed: int) -> np.ndarray:
    """A deterministic colourful (H, W, 3) uint8 picture with some structure."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))


def with_edit_alpha(rgb: np.ndarray, edit: tuple[slice, slice]) -> Image.Image:
    """RGBA whose alpha is 0 on the edit region: ComfyUI's LoadImage makes that mask = 1."""
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[edit] = 0
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")


def write_inputs(inputs: Path) -> None:
    inputs.mkdir(parents=True, exist_ok=True)
    photo = smooth_picture(64, 64, 1)
    with_edit_alpha(photo, PHOTO_EDIT).save(inputs / "pbe_photo.png")
    with_edit_alpha(smooth_picture(120, 160, 2), LARGE_EDIT).save(inputs / "pbe_large_photo.png")
    Image.fromarray(smooth_picture(48, 40, 3)).save(inputs / "pbe_exemplar.png")
    object_mask = np.zeros((48, 40), np.uint8)
    object_mask[8:40, 6:34] = 255
    Image.fromarray(object_mask).save(inputs / "pbe_exemplar_mask.png")
    Image.fromarray(photo).save(inputs / "pbe_no_mask.png")  # no alpha: an empty mask
    wide = np.zeros((48, 64), np.uint8)
    wide[10:30, 10:30] = 255
    Image.fromarray(wide).save(inputs / "pbe_mask_64x48.png")
    Image.fromarray(smooth_picture(120, 160, 2)).save(inputs / "pbe_large_no_mask.png")
    half = np.zeros((60, 80), np.uint8)  # the large photo's edit at half size: same aspect
    half[25:35, 50:62] = 255
    Image.fromarray(half).save(inputs / "pbe_mask_80x60.png")
    cutout = np.zeros((48, 40, 4), np.uint8)  # a red object on a transparent background
    cutout[..., :3] = smooth_picture(48, 40, 4)
    cutout[CUTOUT_OBJECT] = (255, 0, 0, 255)
    Image.fromarray(cutout, "RGBA").save(inputs / "pbe_cutout.png")


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    """(base url, base directory): ComfyUI running with the pack, stopped afterwards."""
    base = tmp_path_factory.mktemp("comfyui-base")
    for folder in ("custom_nodes", "input", "output", "temp", "user", "models"):
        (base / folder).mkdir(exist_ok=True)
    install_pack(base)
    write_models(base / "models")
    write_inputs(base / "input")
    port = free_port()
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    log_path = base / "comfyui.log"
    command = [
        python,
        "main.py",
        "--cpu",
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        "--base-directory",
        str(base),
        "--disable-auto-launch",
    ]
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            command,
            cwd=COMFYUI_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(
                    f"ComfyUI exited ({server.returncode}):\n{log_path.read_text()[-3000:]}"
                )
            try:
                if requests.get(f"{url}/object_info/PaintByExampleEdit", timeout=2).json():
                    break
            except (requests.ConnectionError, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"ComfyUI did not serve the pack in {START_TIMEOUT_S} s:\n"
                    f"{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.3)
        yield url, base
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# ---------------------------------------------------------------------------------------------
# Workflows over HTTP


def api_workflow(name: str, as_shipped: bool = False, **overrides) -> dict:
    """An API-format example with the tiny model (unless as_shipped: the weights it names), and
    every input named in overrides set (on every node that has it)."""
    workflow = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    overrides = overrides if as_shipped else {"ckpt_name": MODEL, **overrides}
    for node in workflow.values():
        for key, value in overrides.items():
            if key in node["inputs"]:
                node["inputs"][key] = value
    return workflow


def node_of(workflow: dict, class_type: str) -> dict:
    return next(node for node in workflow.values() if node["class_type"] == class_type)


def submit(url: str, workflow: dict) -> str:
    response = requests.post(f"{url}/prompt", json={"prompt": workflow, "client_id": "pbe-tests"})
    assert response.status_code == 200, response.text
    return response.json()["prompt_id"]


def wait(url: str, prompt_id: str, timeout: float = RUN_TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = requests.get(f"{url}/history/{prompt_id}").json()
        if prompt_id in history and history[prompt_id]["status"].get("completed") is not None:
            return history[prompt_id]
        time.sleep(0.1)
    pytest.fail(f"prompt {prompt_id} did not finish in {timeout} s")


def messages(entry: dict, event: str) -> list[dict]:
    return [data for name, data in entry["status"]["messages"] if name == event]


def run_entry(url: str, workflow: dict) -> dict:
    """Run a workflow that must succeed; its history entry."""
    entry = wait(url, submit(url, workflow))
    errors = messages(entry, "execution_error")
    assert entry["status"]["status_str"] == "success", (
        errors[0]["exception_message"] if errors else entry
    )
    return entry


def saved_images(url: str, entry: dict) -> list[np.ndarray]:
    """The pictures a run saved to the output folder, as (H, W, 3) uint8."""
    images = []
    for output in entry["outputs"].values():
        for image in output.get("images", []):
            if image["type"] == "output":
                response = requests.get(f"{url}/view", params=image)
                assert response.status_code == 200
                images.append(np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")))
    return images


def run(url: str, workflow: dict) -> np.ndarray:
    """Run a workflow; the one image it saved."""
    [image] = saved_images(url, run_entry(url, workflow))
    return image


def run_error(url: str, workflow: dict) -> dict:
    """Run a workflow that must fail in a node; its execution_error message."""
    entry = wait(url, submit(url, workflow))
    assert entry["status"]["status_str"] == "error"
    [error] = messages(entry, "execution_error")
    return error


def input_rgba(base: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(base / "input" / name).convert("RGBA"))


# ---------------------------------------------------------------------------------------------
# UI format -> API format, as the front end converts (for checking the two twins agree)

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def combo_options(spec: list) -> list:
    """The choices of a combo input, in V1 (["a", "b"], {...}) or V3 ("COMBO", {"options"}) form."""
    return spec[0] if isinstance(spec[0], list) else spec[1]["options"]


def widget_default(spec: list):
    options = spec[1] if len(spec) > 1 else {}
    if "default" in options:
        return options["default"]
    return combo_options(spec)[0] if isinstance(spec[0], list) or spec[0] == "COMBO" else None


def ui_to_api(ui: dict, object_info: dict) -> dict:
    links = {link[0]: link for link in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        if node["type"] not in object_info or node.get("mode", 0) != 0:
            continue  # notes and other front-end-only nodes
        definition = object_info[node["type"]]
        specs = {
            **definition["input"].get("required", {}),
            **definition["input"].get("optional", {}),
        }
        order = definition["input_order"].get("required", []) + definition["input_order"].get(
            "optional", []
        )
        linked = {
            slot["name"]: [str(links[slot["link"]][1]), links[slot["link"]][2]]
            for slot in node["inputs"]
            if slot.get("link") is not None
        }
        values = iter(node["widgets_values"])
        inputs = {}
        for name in order:
            spec = specs[name]
            if name in linked:
                inputs[name] = linked[name]
            elif isinstance(spec[0], list) or spec[0] in WIDGET_TYPES:
                # a widget added after the workflow was saved keeps its default, as in the UI
                inputs[name] = next(values, widget_default(spec))
                options = spec[1] if len(spec) > 1 else {}
                if spec[0] == "INT" and options.get("control_after_generate"):
                    next(values, None)  # the "control after generate" widget
                if options.get("image_upload"):
                    next(values)  # the upload button's value
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


# ---------------------------------------------------------------------------------------------
# What ComfyUI shows


def test_nodes_are_registered_with_tooltips_and_category(comfy):
    url, _ = comfy
    info = requests.get(f"{url}/object_info").json()
    for name in OUR_NODES:
        node = info[name]
        assert node["category"] == "Paint by Example"
        assert node["python_module"] == f"custom_nodes.{PACK_NAME}"
        assert node["description"]
        for section in ("required", "optional"):
            for input_name, spec in node["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), (
                    f"{name}.{input_name} has no tooltip"
                )
    sampler = info["PaintByExampleEdit"]["input"]["required"]
    ksampler = info["KSampler"]["input"]["required"]
    for name in ("sampler_name", "scheduler"):
        assert combo_options(sampler[name]) == combo_options(ksampler[name])


def test_loader_lists_files_diffusers_folders_and_checkpoints(comfy):
    url, _ = comfy
    loader = requests.get(f"{url}/object_info/PaintByExampleModelLoader").json()
    choices = combo_options(loader["PaintByExampleModelLoader"]["input"]["required"]["ckpt_name"])
    assert {"diffusers", MODEL, "not_pbe.safetensors", "model.ckpt"} <= set(choices)
    assert not any(choice.startswith("diffusers/") for choice in choices)


def test_templates_thumbnails_and_web_extension_are_served(comfy):
    url, _ = comfy
    assert sorted(requests.get(f"{url}/workflow_templates").json()[PACK_NAME]) == sorted(EXAMPLES)
    for name in EXAMPLES:
        thumbnail = requests.get(f"{url}/api/workflow_templates/{PACK_NAME}/{name}.jpg")
        assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8"
    assert (
        f"/extensions/{PACK_NAME}/paint_by_example.js" in requests.get(f"{url}/extensions").json()
    )


@pytest.mark.parametrize("name", EXAMPLES)
def test_ui_workflows_match_their_api_twins(comfy, name):
    url, _ = comfy
    ui = requests.get(f"{url}/api/workflow_templates/{PACK_NAME}/{name}.json").json()
    twin = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    expected = {
        key: {"class_type": n["class_type"], "inputs": n["inputs"]} for key, n in twin.items()
    }
    assert ui_to_api(ui, requests.get(f"{url}/object_info").json()) == expected


# ---------------------------------------------------------------------------------------------
# Edits


def untouched_beyond(photo: np.ndarray, feather: int) -> np.ndarray:
    """Where a stitch with this feather (and no grow) must leave the photo bit-identical: beyond
    the square `feather`-pixel neighbourhood of the mask's box."""
    rows, cols = np.nonzero(photo[..., 3] == 0)
    untouched = np.ones(photo.shape[:2], bool)
    untouched[
        max(rows.min() - feather, 0) : rows.max() + feather + 1,
        max(cols.min() - feather, 0) : cols.max() + feather + 1,
    ] = False
    return untouched


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_workflow_runs_to_an_image(comfy, name):
    """Each shipped workflow as an API prompt (its UI form converts to the same prompt: above);
    with the weights where the README and `download --dir` put them, unchanged (item 14)."""
    url, base = comfy
    workflow = api_workflow(name, as_shipped=True, **FAST)
    photo = input_rgba(base, workflow[PHOTO]["inputs"]["image"])
    images = saved_images(url, run_entry(url, workflow))
    assert len(images) == (4 if name == BEST_OF else 1)
    stitch = next((n for n in workflow.values() if "feather" in n["inputs"]), None)
    for image in images:
        assert image.shape == photo.shape[:2] + (3,)
        edit = photo[..., 3] == 0
        assert np.abs(image[edit].astype(int) - photo[..., :3][edit]).mean() > 5  # it edited
        if stitch is not None:  # crop and stitch: every pixel beyond the feather is the photo's
            untouched = untouched_beyond(photo, stitch["inputs"]["feather"])
            assert np.array_equal(image[untouched], photo[..., :3][untouched])


@pytest.mark.parametrize("name", EXAMPLES)
def test_shipped_workflows_name_the_weights_and_where_to_get_them(comfy, name):
    """ComfyUI's missing-models dialog lists what a workflow's `models` names (item 14)."""
    url, _ = comfy
    ui = requests.get(f"{url}/api/workflow_templates/{PACK_NAME}/{name}.json").json()
    [official] = download.OFFICIAL_FILES["single"]
    assert ui["models"] == [
        {
            "name": SHIPPED_NAME,
            "url": download.official_url(official, download.HUB_ENDPOINT),
            "directory": "paint_by_example",
        }
    ]
    loaders = [n for n in ui["nodes"] if n["type"] == "PaintByExampleModelLoader"]
    assert [loader["widgets_values"] for loader in loaders] == [[SHIPPED_NAME]]
    folders = requests.get(f"{url}/models").json()
    assert "paint_by_example" in folders  # the dialog's "directory" is a known model folder


@pytest.mark.parametrize("ckpt_name", ["diffusers", "model.ckpt"])
def test_loader_reads_every_layout_to_the_same_edit(comfy, ckpt_name):
    url, _ = comfy
    settings = {**FAST, "steps": 1, "seed": 3}
    expected = run(url, api_workflow(BASIC, **settings))
    assert np.array_equal(run(url, api_workflow(BASIC, **settings, ckpt_name=ckpt_name)), expected)


REFERENCE = {
    "seed": 11,
    "steps": 8,
    "cfg": 5.0,
    "sampler_name": "ddim",
    "scheduler": "ddim_uniform",
}


@pytest.fixture(scope="module")
def reference_edit(comfy) -> np.ndarray:
    """The all-in-one on the 64x64 photo, whole image, no feather: DDIM timesteps (8 divides
    1000, so ddim_uniform and pbe_core agree on them)."""
    url, _ = comfy
    workflow = api_workflow(BASIC, **REFERENCE, region="full image", feather=0, grow=0)
    return run(url, workflow).astype(int)


def test_comfyui_edit_matches_pbe_core_pipeline(comfy, reference_edit):
    _, base = comfy
    photo = input_rgba(base, "pbe_photo.png")
    exemplar = np.asarray(Image.open(base / "input" / "pbe_exemplar.png").convert("RGB"))
    pipe = PaintByExample(load_models(base / "models" / "paint_by_example" / MODEL))
    seed = REFERENCE["seed"]
    # the initial noise as ComfyUI draws it: torch.manual_seed(seed), then randn on the CPU
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(seed))
    edit = photo[..., 3] == 0

    def pipeline_image(sampler: str) -> np.ndarray:
        result = pipe.run(
            photo[..., :3],
            edit.astype(np.float32),
            exemplar,
            steps=REFERENCE["steps"],
            guidance=REFERENCE["cfg"],
            sampler=sampler,
            noise=noise,
            region="full",
            feather=0,
        )
        pixels = result.images[0].permute(1, 2, 0).numpy()
        return np.clip(255.0 * pixels, 0, 255).astype(np.uint8).astype(int)  # as SaveImage writes

    # ComfyUI's "ddim" is Euler on the DDIM timesteps: pbe_core's Euler on that grid is the
    # same computation, so the pictures agree to the 8-bit rounding.
    assert np.abs(pipeline_image("euler") - reference_edit).max() <= 1
    # pbe_core's DDIM (the reference sampler) differs in the last step (to alphas_cumprod[0]
    # rather than to sigma 0) and starts at unit-variance noise in x_t space.
    ddim = np.abs(pipeline_image("ddim") - reference_edit)[edit] / 255
    assert ddim.mean() < 0.005 and ddim.max() < 0.05


def test_stock_chain_agrees_with_the_all_in_one_node(comfy, reference_edit):
    url, base = comfy
    photo = input_rgba(base, "pbe_photo.png")
    stock = run(url, api_workflow(STOCK, **REFERENCE)).astype(int)
    edit = photo[..., 3] == 0
    # They differ only in the starting latent: ComfyUI adds the source latent to the noise for
    # the stock chain; the all-in-one starts from noise alone, as the reference does.
    assert np.abs(stock[edit] - reference_edit[edit]).mean() / 255 < 0.01
    assert np.abs(stock[edit] - photo[..., :3][edit]).mean() / 255 > 0.05  # it did edit


def test_image_batches_broadcast_mask_and_exemplar(comfy):
    url, base = comfy
    workflow = api_workflow(BASIC, **FAST, seed=21)
    workflow["91"] = {
        "class_type": "RepeatImageBatch",
        "inputs": {"image": [PHOTO, 0], "amount": 2},
    }
    node_of(workflow, "PaintByExampleEdit")["inputs"]["image"] = ["91", 0]
    images = saved_images(url, run_entry(url, workflow))
    photo = input_rgba(base, "pbe_photo.png")
    untouched = untouched_beyond(photo, 8)
    assert len(images) == 2
    for image in images:
        assert np.array_equal(image[untouched], photo[..., :3][untouched])
    assert not np.array_equal(images[0], images[1])  # each image its own noise


def test_exemplar_options_mask_tools_and_previews(comfy):
    url, base = comfy
    workflow = api_workflow(CROP_STITCH, **FAST, seed=22)
    workflow["92"] = {
        "class_type": "PaintByExampleGrowMask",
        "inputs": {"mask": [PHOTO, 1], "grow": 4, "feather": 0, "kernel": "round"},
    }
    workflow["93"] = {
        "class_type": "PaintByExampleMaskToBBox",
        "inputs": {"mask": ["92", 0], "threshold": 0.5},
    }
    workflow["94"] = {
        "class_type": "ImageBatch",
        "inputs": {"image1": ["3", 0], "image2": [PHOTO, 0]},
    }
    workflow["95"] = {
        "class_type": "LoadImageMask",
        "inputs": {"image": "pbe_exemplar_mask.png", "channel": "red"},
    }
    node_of(workflow, "PaintByExampleCrop")["inputs"]["mask"] = ["93", 0]
    node_of(workflow, "PaintByExampleExemplarEncode")["inputs"].update(
        exemplar=["94", 0],
        exemplar_mask=["95", 0],
        exemplar_mask_marks="object",  # LoadImageMask of a white-on-black object mask
        combine="blend",
        blend_weights="1, 0.5",
        negative_exemplar=[PHOTO, 0],
        negative_weight=0.5,
    )
    entry = run_entry(url, workflow)
    [image] = saved_images(url, entry)
    photo = input_rgba(base, "pbe_large_photo.png")
    untouched = untouched_beyond(photo, 8 + 4)  # feather beyond the grown mask's box
    assert np.array_equal(image[untouched], photo[..., :3][untouched])
    previews = {
        node_id: output["images"]
        for node_id, output in entry["outputs"].items()
        if workflow[node_id]["class_type"] != "SaveImage"
    }
    assert len(previews["4"]) == 1 and len(previews["5"]) == 2  # the crop box; both exemplars
    assert all(preview["type"] == "temp" for images in previews.values() for preview in images)


def test_interrupt_stops_a_run_and_the_next_one_is_served(comfy):
    url, _ = comfy
    long_run = api_workflow(
        BASIC,
        **FAST | {"steps": 10000, "seed": 123, "sampler_name": "euler", "scheduler": "normal"},
    )
    prompt_id = submit(url, long_run)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not any(
        item[1] == prompt_id for item in requests.get(f"{url}/queue").json()["queue_running"]
    ):
        assert time.monotonic() < deadline, "the long run never started"
        time.sleep(0.05)
    time.sleep(1.0)  # into the sampling loop
    interrupted_at = time.monotonic()
    assert requests.post(f"{url}/interrupt", json={"prompt_id": prompt_id}).status_code == 200
    entry = wait(url, prompt_id, timeout=20)
    assert time.monotonic() - interrupted_at < 10
    assert entry["status"]["status_str"] == "error"
    assert messages(entry, "execution_interrupted")
    assert run(url, api_workflow(BASIC, **FAST | {"steps": 1, "seed": 124})).shape == (64, 64, 3)


# ---------------------------------------------------------------------------------------------
# Bad inputs: clear node errors, not stack traces


def mask_from_file(workflow: dict, file: str) -> dict:
    """The all-in-one's mask from a separate (greyscale) mask file instead of the photo's alpha."""
    workflow = copy.deepcopy(workflow)
    workflow["90"] = {"class_type": "LoadImageMask", "inputs": {"image": file, "channel": "red"}}
    node_of(workflow, "PaintByExampleEdit")["inputs"]["mask"] = ["90", 0]
    return workflow


@pytest.mark.parametrize(
    ("case", "node_type", "phrases"),
    [
        (
            "foreign model",
            "PaintByExampleModelLoader",
            ["not a Paint by Example model", "exemplar encoder"],
        ),
        ("mask size", "PaintByExampleEdit", ["mask is 64x48 but the image is 64x64"]),
        ("empty mask", "PaintByExampleEdit", ["mask is empty", "Paint the region"]),
        # Load Image's 64x64 placeholder for a 160x120 photo: not a size mismatch (item 13)
        (
            "no painted mask",
            "PaintByExampleCrop",
            ["mask is empty", "no mask was painted", "Open in MaskEditor"],
        ),
    ],
)
def test_bad_inputs_come_back_as_clear_node_errors(comfy, case, node_type, phrases):
    url, _ = comfy
    workflow = api_workflow(
        CROP_STITCH if case == "no painted mask" else BASIC,
        **FAST,
    )
    if case == "no painted mask":
        workflow[PHOTO]["inputs"]["image"] = "pbe_large_no_mask.png"
    elif case == "foreign model":
        node_of(workflow, "PaintByExampleModelLoader")["inputs"]["ckpt_name"] = (
            "not_pbe.safetensors"
        )
    elif case == "mask size":
        workflow = mask_from_file(workflow, "pbe_mask_64x48.png")
    else:
        workflow[PHOTO]["inputs"]["image"] = "pbe_no_mask.png"
    error = run_error(url, workflow)
    assert error["node_type"] == node_type
    # the message, not a type named after the pack's folder path (issue 9, item 18)
    assert error["exception_type"] == "ValueError"
    message = error["exception_message"]
    for phrase in phrases:
        assert phrase in message
    assert "Traceback" not in message and message.count("\n") <= 2


# ---------------------------------------------------------------------------------------------
# Workflows saved before the V3 nodes, exemplar masks, warnings on the node


@pytest.mark.parametrize("name", SAVED_EXAMPLES)
def test_workflows_saved_with_the_v1_nodes_still_load_and_run(comfy, name):
    url, _ = comfy
    saved_api = json.loads((SAVED_WORKFLOWS / "api" / f"{name}.json").read_text())
    saved_ui = json.loads((SAVED_WORKFLOWS / f"{name}.json").read_text())
    converted = ui_to_api(saved_ui, requests.get(f"{url}/object_info").json())
    for key, node in saved_api.items():  # every saved input keeps its name and value
        assert converted[key]["class_type"] == node["class_type"]
        assert converted[key]["inputs"].items() >= node["inputs"].items()
    settings = {"ckpt_name": MODEL, **FAST, "steps": 1, "seed": 5}
    for workflow in (saved_api, converted):
        for node in workflow.values():
            node["inputs"].update({k: v for k, v in settings.items() if k in node["inputs"]})
    assert np.array_equal(run(url, saved_api), run(url, converted))


def preview_pixels(url: str, entry: dict, node_id: str) -> np.ndarray:
    [preview] = entry["outputs"][node_id]["images"]
    response = requests.get(f"{url}/view", params=preview)
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")).astype(int)


@pytest.mark.parametrize(("marks", "object_seen"), [(None, True), ("object", False)])
def test_cut_out_exemplar_from_load_image_keeps_its_object(comfy, marks, object_seen):
    """Load Image's MASK of a cut-out is 1 on the background: by default that is understood, and
    the node's preview shows what the encoder saw (issue 9, item 15)."""
    url, _ = comfy
    workflow = api_workflow(BASIC, **FAST | {"steps": 1})
    workflow["96"] = {"class_type": "LoadImage", "inputs": {"image": "pbe_cutout.png"}}
    edit = node_of(workflow, "PaintByExampleEdit")["inputs"]
    edit.update(exemplar=["96", 0], exemplar_mask=["96", 1])
    edit.pop("exemplar_mask_marks")  # as a workflow saved before the input existed
    if marks is not None:
        edit["exemplar_mask_marks"] = marks
    entry = run_entry(url, workflow)
    seen = preview_pixels(url, entry, "4")
    height, width = seen.shape[:2]
    centre = seen[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3].mean(axis=(0, 1))
    if object_seen:  # cropped to the red object
        assert centre[0] > 200 and centre[1:].max() < 60
    else:  # the object greyed out as background
        assert np.abs(centre - 128).max() < 10


def test_mask_resize_warning_is_shown_on_the_node(comfy):
    """A same-aspect mask at another size is resized; the warning reaches the UI (item 17)."""
    url, _ = comfy
    workflow = api_workflow(CROP_STITCH, **FAST | {"steps": 1})
    workflow["90"] = {
        "class_type": "LoadImageMask",
        "inputs": {"image": "pbe_mask_80x60.png", "channel": "red"},
    }
    crop_id = next(k for k, n in workflow.items() if n["class_type"] == "PaintByExampleCrop")
    workflow[crop_id]["inputs"]["mask"] = ["90", 0]
    entry = run_entry(url, workflow)
    [warning] = entry["outputs"][crop_id]["pbe_warnings"]
    assert "mask is 80x60 but the image is 160x120" in warning and "resizing" in warning


# ---------------------------------------------------------------------------------------------
# Colour match, ranking, crop options (issue 11)


def test_rank_node_orders_edits_by_region_clip_score(comfy):
    url, base = comfy
    workflow = api_workflow(BEST_OF, **FAST | {"steps": 1, "seed": 31})
    entry = run_entry(url, workflow)
    ranked = saved_images(url, entry)
    [text] = entry["outputs"]["9"]["text"]  # Preview Any of the scores
    scores = [float(value) for value in text.split(", ")]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)
    assert len({image.tobytes() for image in ranked}) == 4  # four different edits
    # the saved pictures, scored again by pbe_core on the same model, come out in that order
    models = load_models(base / "models" / "paint_by_example" / MODEL)
    photo = input_rgba(base, "pbe_photo.png")
    pixels = torch.from_numpy(np.stack(ranked)).permute(0, 3, 1, 2).float() / 255
    edit_mask = torch.from_numpy(photo[..., 3] == 0).float()[None, None]
    exemplar = np.asarray(Image.open(base / "input" / "pbe_exemplar.png").convert("RGB"))
    again = region_clip_score(pixels, edit_mask, exemplar, models.encoder.transformer)
    assert np.allclose(again.numpy(), scores, atol=1.0)  # 8-bit saving moves them a little
    assert again.tolist() == sorted(again.tolist(), reverse=True)


def test_colour_match_node_moves_the_region_towards_its_surroundings(comfy):
    url, base = comfy
    workflow = api_workflow(COLOUR, **FAST | {"steps": 1, "seed": 32})
    entry = run_entry(url, workflow)
    [matched] = saved_images(url, entry)
    [before] = entry["outputs"]["8"]["images"]  # the preview of the edit before the match
    response = requests.get(f"{url}/view", params=before)
    before = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    photo = input_rgba(base, "pbe_photo.png")
    untouched = untouched_beyond(photo, 8)
    assert np.array_equal(matched[untouched], before[untouched])
    edit = photo[..., 3] == 0
    ring = ~edit & ~untouched_beyond(photo, 8 + 16) & untouched

    def lab(picture: np.ndarray) -> torch.Tensor:
        return rgb_to_lab(torch.from_numpy(picture).permute(2, 0, 1)[None].float() / 255)[0]

    def distance(picture: np.ndarray) -> float:
        values = lab(picture)
        return float((values[:, edit].mean(1) - values[:, ring].mean(1)).norm())

    assert distance(matched) < 0.5 * distance(before)


def test_crop_options_shape_the_crop_and_reach_the_all_in_one(comfy):
    url, base = comfy
    workflow = api_workflow(
        CROP_STITCH, **FAST | {"steps": 1, "seed": 33, "max_aspect": 1.0, "multiple": 16}
    )
    crop_id = next(k for k, n in workflow.items() if n["class_type"] == "PaintByExampleCrop")
    workflow["97"] = {"class_type": "PreviewImage", "inputs": {"images": [crop_id, 0]}}
    entry = run_entry(url, workflow)
    [crop] = entry["outputs"]["97"]["images"]
    with Image.open(io.BytesIO(requests.get(f"{url}/view", params=crop).content)) as picture:
        assert picture.width == picture.height and picture.width % 16 == 0  # square, multiple
    full = api_workflow(BASIC, **FAST | {"steps": 1, "seed": 33})
    node_of(full, "PaintByExampleEdit")["inputs"].update(
        fill_holes=True, mask_hipass=0.2, colour_match=0.5, context_mask=[PHOTO, 1]
    )
    image = run(url, full)
    photo = input_rgba(base, "pbe_photo.png")
    untouched = untouched_beyond(photo, 8)
    assert np.array_equal(image[untouched], photo[..., :3][untouched])


# ---------------------------------------------------------------------------------------------
# LoRA (issue 8)

LORA_RUN = {**FAST, "steps": 2, "seed": 41, "region": "full image"}


def with_lora_node(workflow: dict, node_type: str) -> dict:
    """The all-in-one's model (and for our node its encoder) through a LoRA node."""
    edit = node_of(workflow, "PaintByExampleEdit")["inputs"]
    if node_type == "PaintByExampleLoraLoader":
        workflow["80"] = {
            "class_type": node_type,
            "inputs": {
                "model": edit["model"],
                "encoder": edit["encoder"],
                "lora_name": LORA,
                "strength": LORA_STRENGTH,
            },
        }
        edit.update(model=["80", 0], encoder=["80", 1])
    else:  # ComfyUI's own
        workflow["80"] = {
            "class_type": node_type,
            "inputs": {"model": edit["model"], "lora_name": LORA, "strength_model": LORA_STRENGTH},
        }
        edit["model"] = ["80", 0]
    return workflow


@pytest.mark.parametrize(
    ("node_type", "merged"),
    [
        ("PaintByExampleLoraLoader", "merged_lora.safetensors"),
        # ComfyUI's own loader finds the UNet part of the file on our MODEL (it leaves the
        # encoder parts, which it does not know, alone)
        ("LoraLoaderModelOnly", "merged_unet.safetensors"),
    ],
)
def test_lora_on_the_model_equals_the_lora_merged_into_the_weights(comfy, node_type, merged):
    url, base = comfy
    applied = run(url, with_lora_node(api_workflow(BASIC, **LORA_RUN), node_type)).astype(int)
    expected = run(url, api_workflow(BASIC, **LORA_RUN, ckpt_name=merged)).astype(int)
    plain = run(url, api_workflow(BASIC, **LORA_RUN)).astype(int)
    edit = input_rgba(base, "pbe_photo.png")[..., 3] == 0
    assert np.abs(applied - expected).max() <= 2  # 8-bit rounding of float32 differences
    assert np.abs(applied[edit] - plain[edit]).mean() > 5  # the LoRA did change the edit


def test_lora_of_another_kind_is_refused_by_name(comfy):
    url, base = comfy
    from safetensors.torch import save_file

    save_file(
        {"lora_unet_x.lora_down.weight": torch.zeros(2, 2)},
        base / "models" / "loras" / "sd.safetensors",
    )
    requests.get(f"{url}/object_info/PaintByExampleLoraLoader")  # the list refreshes
    workflow = with_lora_node(api_workflow(BASIC, **LORA_RUN), "PaintByExampleLoraLoader")
    workflow["80"]["inputs"]["lora_name"] = "sd.safetensors"
    error = run_error(url, workflow)
    assert error["node_type"] == "PaintByExampleLoraLoader"
    assert "not a Paint by Example LoRA" in error["exception_message"]
    assert error["exception_type"] == "ValueError"
