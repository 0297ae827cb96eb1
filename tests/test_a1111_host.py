"""The A1111 script against a real AUTOMATIC1111 webui and a real Forge, driven over their HTTP
API and their UI's own Generate call; and install.py, which needs no webui.

Needs A1111_DIR (a webui checkout with its dependencies installed) and A1111_PYTHON (its
python; default this one), and for Forge FORGE_DIR and FORGE_PYTHON; each host is skipped,
saying why, when its folder is not set. Each host starts once for the module on the CPU, with
no Stable Diffusion checkpoint, its UI and API, and with `--data-dir` in a temporary folder
that holds the extension (symlinks to this repository) and tiny models, so the host's own tree
is not touched.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image, PngImagePlugin

from pbe_core.checkpoint import load_models
from pbe_core.pipeline import PaintByExample
from pbe_core.testing import tiny_weights, write_layout

REPO = Path(__file__).resolve().parents[1]
EXTENSION_PARTS = ("scripts", "pbe_webui", "pbe_core", "install.py", "metadata.ini", "requirements.txt")
SCRIPT = "paint by example"
MODEL = "model.safetensors"
LORA = "tiny_lora.safetensors"
START_TIMEOUT_S = 120
WEBUI_FLAGS = (
    "--skip-prepare-environment --skip-install --skip-torch-cuda-test --skip-python-version-check "
    "--skip-version-check --use-cpu all --no-half --precision full --api "
    "--no-download-sd-model --skip-load-model-at-start --server-name 127.0.0.1"
).split()
HOSTS = {  # name -> (folder variable, python variable, extra flags)
    "webui": ("A1111_DIR", "A1111_PYTHON", []),
    "forge": ("FORGE_DIR", "FORGE_PYTHON", ["--always-cpu"]),
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def install_extension(data_dir: Path) -> Path:
    """The extension as the webui sees it, its parts linked to this repository."""
    extension = data_dir / "extensions" / "paint-by-example"
    extension.mkdir(parents=True)
    for part in EXTENSION_PARTS:
        (extension / part).symlink_to(REPO / part)
    return extension


def write_models(models_dir: Path) -> Path:
    """The tiny model, a file that is no Paint by Example model, a LoRA of the tiny model, a
    file in the LoRA folder that is none, and a Stable Diffusion LoRA in the webui's folder."""
    from safetensors.torch import save_file

    path = write_layout(tiny_weights(0), "safetensors", models_dir)
    write_layout(tiny_weights(0), "diffusers", models_dir)  # the same weights as a folder
    save_file(
        {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)},
        models_dir / "not_pbe.safetensors",
    )
    write_lora(load_models(path), models_dir / "lora" / LORA)
    save_file({"not.a.lora": torch.zeros(1)}, models_dir / "lora" / "not_lora.safetensors")
    (models_dir.parent / "Lora").mkdir(exist_ok=True)
    save_file(
        {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(1, 1)},
        models_dir.parent / "Lora" / "sd_lora.safetensors",
    )
    return path


def write_lora(models, path: Path) -> None:
    """A LoRA with non-zero adapters and a changed unconditional vector: it changes the edit."""
    from pbe_core.train.lora import LoRAAdapters, save_lora

    generator = torch.Generator().manual_seed(5)
    adapters = LoRAAdapters(models.unet, rank=2, targets=("attention",))
    with torch.no_grad():
        for layer in adapters.layers:
            layer.up.weight.copy_(0.2 * torch.randn(layer.up.weight.shape, generator=generator))
        models.encoder.learnable_vector.add_(0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_lora(adapters, models, path, encoder_parts=("learnable_vector",))


def started(url: str, log_path: Path) -> bool:
    """The API answers and start-up has finished: the webui serves requests before its API has
    computed the default script arguments, and requests in that window lose their script_args."""
    if "Startup time:" not in log_path.read_text(errors="replace"):
        return False
    try:
        return requests.get(f"{url}/sdapi/v1/scripts", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


@pytest.fixture(scope="module", params=list(HOSTS))
def webui(request, tmp_path_factory):
    """(base url, data dir): the webui or Forge running with the extension, stopped afterwards."""
    folder_variable, python_variable, extra_flags = HOSTS[request.param]
    folder = os.environ.get(folder_variable)
    if not folder or not (Path(folder) / "launch.py").is_file():
        pytest.skip(
            f"no {request.param}: set {folder_variable} to its folder (and {python_variable} "
            f"to its python)"
        )
    data_dir = tmp_path_factory.mktemp(f"{request.param}-data")
    install_extension(data_dir)
    write_models(data_dir / "models" / "PaintByExample")
    port = free_port()
    python = os.environ.get(python_variable, sys.executable)
    log_path = data_dir / "webui.log"
    command = [
        python, "launch.py", *WEBUI_FLAGS, *extra_flags,
        "--port", str(port), "--data-dir", str(data_dir),
    ]
    env = dict(os.environ, COMMANDLINE_ARGS="", PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(
                    f"the webui exited ({server.returncode}):\n{log_path.read_text()[-3000:]}"
                )
            if started(url, log_path):
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the webui did not answer in {START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.3)
        yield url, data_dir
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# ---------------------------------------------------------------------------------------------
# Inputs


def b64(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def unb64(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


def photo(width: int = 64, height: int = 48) -> Image.Image:
    rng = np.random.default_rng(3)
    ys, xs = np.mgrid[0:height, 0:width]
    gradient = np.stack([xs * 4, ys * 5, (xs + ys) * 2], axis=-1) % 256
    noise = rng.integers(0, 40, (height, width, 3))
    return Image.fromarray(((gradient + noise) % 256).astype(np.uint8), "RGB")


def box_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def exemplar_picture(transparent: bool = False) -> Image.Image:
    picture = Image.new("RGBA", (40, 30), (30, 160, 220, 255))
    picture.paste((240, 200, 20, 255), (8, 6, 30, 24))
    if transparent:
        picture.paste((0, 0, 0, 0), (0, 0, 40, 5))
    return picture if transparent else picture.convert("RGB")


ARG_NAMES = (
    "exemplar",
    "model",
    "sampler",
    "crop_context",
    "exemplar_mode",
    "negative_exemplar",
    "negative_weight",
    "colour_match",
    "best_of",
    "lora",
    "lora_strength",
)
DEFAULT_ARGS = {
    "exemplar": exemplar_picture(),
    "model": MODEL,
    "sampler": "DDIM",
    "crop_context": 1.5,
    "exemplar_mode": "squash",
    "negative_exemplar": None,
    "negative_weight": 1.0,
    "colour_match": 0.0,
    "best_of": 1,
    "lora": "None",
    "lora_strength": 1.0,
}


def script_args(**changes) -> list:
    """Every ui() value, in ui()'s order (the API does not fill in missing ones)."""
    values = DEFAULT_ARGS | changes
    return [b64(v) if isinstance(v, Image.Image) else v for v in (values[n] for n in ARG_NAMES)]


def request(
    image: Image.Image, mask: Image.Image | None, args: list | None = None, **fields
) -> dict:
    payload = {
        "init_images": [b64(image)],
        "steps": 3,
        "cfg_scale": 5.0,
        "seed": 1234,
        "batch_size": 1,
        "n_iter": 1,
        "width": 64,
        "height": 64,
        "resize_mode": 0,
        "mask_blur": 2,
        "inpaint_full_res": True,
        "inpaint_full_res_padding": 8,
        "inpainting_mask_invert": 0,
        "script_name": SCRIPT,
        "script_args": args if args is not None else script_args(),
    }
    if mask is not None:
        payload["mask"] = b64(mask)
    return payload | fields


def post(url: str, payload: dict) -> requests.Response:
    return requests.post(f"{url}/sdapi/v1/img2img", json=payload, timeout=300)  # a shared CPU can be slow


def edit(url: str, payload: dict) -> tuple[list[np.ndarray], dict]:
    response = post(url, payload)
    assert response.status_code == 200, response.text[:2000]
    body = response.json()
    pictures = [np.asarray(unb64(text).convert("RGB")) for text in body["images"]]
    return pictures, json.loads(body["info"])


def pbe_core_edit(
    data_dir: Path, image, mask, exemplar, lora: float | None = None, **options
) -> np.ndarray:
    """The same edit run by pbe_core itself in this process (with the LoRA at strength `lora`)."""
    models = load_models(data_dir / "models" / "PaintByExample" / MODEL)
    if lora is not None:
        from pbe_core.train.lora import apply_lora

        apply_lora(models, data_dir / "models" / "PaintByExample" / "lora" / LORA, lora)
    pipe = PaintByExample(models, device="cpu", dtype=torch.float32)
    [result] = pipe.edit(image, mask, exemplar, **options)
    return np.asarray(result)


def max_difference(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


# ---------------------------------------------------------------------------------------------
# Tests


def test_listed_for_img2img_only(webui):
    url, _ = webui
    listed = requests.get(f"{url}/sdapi/v1/scripts", timeout=10).json()
    assert SCRIPT in listed["img2img"]
    assert SCRIPT not in listed["txt2img"]


def test_script_info_lists_every_argument_in_order(webui):
    url, _ = webui
    infos = requests.get(f"{url}/sdapi/v1/script-info", timeout=10).json()
    [info] = [i for i in infos if i["name"] == SCRIPT and i["is_img2img"]]
    labels = [arg["label"] for arg in info["args"]]
    assert len(labels) == len(ARG_NAMES)
    assert labels[1:4] == ["Model", "Sampler", "Crop context (only masked)"]
    assert labels[7:] == ["Colour match", "Best of", "LoRA", "LoRA strength"]
    model_choices = info["args"][1]["choices"]
    assert model_choices == ["diffusers", MODEL]  # not_pbe.safetensors is left out
    assert info["args"][9]["choices"] == ["None", LORA]


def test_batches_seeds_and_infotext(webui):
    url, _ = webui
    image = photo()
    pictures, info = edit(
        url, request(image, box_mask(image.size, (20, 14, 40, 30)), batch_size=2, n_iter=2)
    )
    assert len(pictures) == 4
    assert all(picture.shape == (48, 64, 3) for picture in pictures)  # only masked: input size
    assert info["all_seeds"][:4] == [1234, 1235, 1236, 1237]
    assert len({picture.tobytes() for picture in pictures}) == 4
    for index, infotext in enumerate(info["infotexts"]):
        assert f"Seed: {1234 + index}" in infotext
        for expected in (
            "Steps: 3",
            "Sampler: DDIM",
            "CFG scale: 5.0",
            "Script: Paint by Example",
            f"PbE model: {MODEL}",
            "PbE model hash: ",
            "PbE sampler: DDIM",
            "PbE exemplar mode: squash",
            "PbE crop context: 1.5",
            "Inpaint area: Only masked",
            "Masked area padding: 8",
            "Mask blur: 2",
        ):
            assert expected in infotext, (expected, infotext)


def test_only_masked_keeps_pixels_beyond_the_feather(webui):
    url, _ = webui
    image = photo()
    box = (24, 16, 36, 28)
    [picture], _ = edit(url, request(image, box_mask(image.size, box), mask_blur=2))
    feather = int(2.5 * 2 + 0.5)
    outside = np.ones(picture.shape[:2], bool)
    outside[box[1] - feather : box[3] + feather, box[0] - feather : box[2] + feather] = False
    source = np.asarray(image)
    assert np.array_equal(picture[outside], source[outside])
    assert (
        max_difference(
            picture[box[1] : box[3], box[0] : box[2]], source[box[1] : box[3], box[0] : box[2]]
        )
        > 20
    )


def test_only_masked_equals_pbe_core(webui):
    """The crop (context from crop context and padding) is larger than pbe_core's minimum."""
    url, data_dir = webui
    image, box = photo(256, 192), (96, 64, 160, 128)
    mask = box_mask(image.size, box)
    [picture], _ = edit(
        url,
        request(
            image,
            mask,
            script_args(sampler="Euler a", crop_context=2.5),
            seed=77,
            mask_blur=4,
            inpaint_full_res_padding=8,
        ),
    )
    expected = pbe_core_edit(
        data_dir,
        image,
        mask,
        exemplar_picture(),
        seed=77,
        steps=3,
        guidance=5.0,
        sampler="euler_a",
        region="auto",
        context=2.5 + 2 * 8 / 64,
        resolution=64,
        feather=int(2.5 * 4 + 0.5),
        exemplar_mode="squash",
    )
    assert max_difference(picture, expected) <= 2


def test_whole_picture_equals_pbe_core(webui):
    """Whole picture at the tab's size, an inverted RGBA mask, a cut-out exemplar, a negative."""
    url, data_dir = webui
    image = photo(64, 64)
    mask = Image.new("RGBA", image.size, (0, 0, 0, 0))
    mask.paste((255, 255, 255, 255), (0, 0, 64, 20))  # painted = kept, with "not masked"
    edit_mask = box_mask(image.size, (0, 20, 64, 64))
    negative = Image.new("RGB", (16, 16), (90, 90, 90))
    args = script_args(
        exemplar=exemplar_picture(transparent=True),
        sampler="DPM++ 2M Karras",
        exemplar_mode="pad",
        negative_exemplar=negative,
        negative_weight=0.5,
    )
    [picture], info = edit(
        url,
        request(
            image,
            mask,
            args,
            inpaint_full_res=False,
            inpainting_mask_invert=1,
            mask_blur=0,
            cfg_scale=3.0,
        ),
    )
    exemplar = exemplar_picture(transparent=True)
    expected = pbe_core_edit(
        data_dir,
        image,
        edit_mask,
        exemplar.convert("RGB"),
        exemplar_mask=exemplar.getchannel("A"),
        seed=1234,
        steps=3,
        guidance=3.0,
        sampler="dpmpp_2m",
        region="full",
        feather=0,
        exemplar_mode="pad",
        negative_exemplar=negative,
        negative_weight=0.5,
    )
    assert max_difference(picture, expected) <= 2
    assert np.array_equal(picture[:20], np.asarray(image)[:20])
    infotext = info["infotexts"][0]
    for expected_text in (
        "Mask mode: Inpaint not masked",
        "PbE negative exemplar weight: 0.5",
        "Sampler: DPM++ 2M",
        "Schedule type: Karras",
    ):
        assert expected_text in infotext
    assert "Inpaint area" not in infotext and "PbE crop context" not in infotext


@pytest.mark.parametrize("resize_mode", [0, 1, 2])
def test_whole_picture_is_resized_to_the_tab_size(webui, resize_mode):
    url, _ = webui
    image = photo(64, 48)
    [picture], _ = edit(
        url,
        request(
            image,
            box_mask(image.size, (20, 14, 40, 30)),
            inpaint_full_res=False,
            resize_mode=resize_mode,
            width=48,
            height=64,
            steps=1,
        ),
    )
    assert picture.shape == (64, 48, 3)


def test_exemplar_as_data_uri_gives_the_same_edit(webui):
    url, _ = webui
    image = photo()
    mask = box_mask(image.size, (20, 14, 40, 30))
    [plain], _ = edit(url, request(image, mask))
    uri = "data:image/png;base64," + b64(exemplar_picture())
    [from_uri], _ = edit(url, request(image, mask, script_args(exemplar=uri)))
    assert np.array_equal(plain, from_uri)


def test_diffusers_folder_gives_the_same_edit(webui):
    url, _ = webui
    image = photo()
    mask = box_mask(image.size, (20, 14, 40, 30))
    [from_file], _ = edit(url, request(image, mask))
    [from_folder], info = edit(url, request(image, mask, script_args(model="diffusers")))
    assert max_difference(from_file, from_folder) <= 1
    assert "PbE model: diffusers" in info["infotexts"][0]
    assert "PbE model hash" not in info["infotexts"][0]


def test_saves_with_infotext_when_asked(webui):
    url, data_dir = webui
    image = photo()
    edit(url, request(image, box_mask(image.size, (20, 14, 40, 30)), save_images=True, seed=4321))
    [saved] = (data_dir / "outputs" / "img2img-images").rglob("*4321*.png")
    parameters = Image.open(saved).info["parameters"]
    assert "PbE sampler: DDIM" in parameters and "Seed: 4321" in parameters
    assert isinstance(Image.open(saved), PngImagePlugin.PngImageFile)


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("no mask", "No mask"),
        ("empty mask", "mask is empty"),
        ("no exemplar", "No exemplar"),
        ("bad exemplar", "not a base64-encoded image"),
        ("missing model", "is not in"),
        ("no model", "No Paint by Example model chosen"),
        ("not a PbE model", "not a Paint by Example model"),
        ("unknown sampler", "sampler 'LMS' is not one of"),
    ],
)
def test_user_errors_are_clear_400s(webui, case, needle):
    url, _ = webui
    image = photo()
    mask = box_mask(image.size, (20, 14, 40, 30))
    payloads = {
        "no mask": request(image, None),
        "empty mask": request(image, Image.new("L", image.size, 0)),
        "no exemplar": request(image, mask, script_args(exemplar=None)),
        "bad exemplar": request(image, mask, script_args(exemplar="not an image")),
        "missing model": request(image, mask, script_args(model="absent.safetensors")),
        "no model": request(image, mask, script_args(model=None)),
        "not a PbE model": request(image, mask, script_args(model="not_pbe.safetensors")),
        "unknown sampler": request(image, mask, script_args(sampler="LMS")),
    }
    response = post(url, payloads[case])
    assert response.status_code == 400, response.text[:2000]
    body = response.json()
    assert body.get("error", "PaintByExampleError") == "PaintByExampleError"  # Forge: detail only
    assert needle in body["detail"], body["detail"]


def test_progress_and_interruption(webui):
    """A long job reports its progress through shared.state and stops when interrupted."""
    url, _ = webui
    image = photo()
    payload = request(image, box_mask(image.size, (20, 14, 40, 30)), steps=900, n_iter=4)
    seen = []
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(post, url, payload)
        deadline = time.monotonic() + 60
        while not running.done() and time.monotonic() < deadline:
            progress = requests.get(f"{url}/sdapi/v1/progress?skip_current_image=true", timeout=10)
            seen.append(progress.json()["state"])
            if seen[-1]["job_count"] == 4 and seen[-1]["sampling_step"] >= 2:
                break
            time.sleep(0.05)
        requests.post(f"{url}/sdapi/v1/interrupt", timeout=10)
        response = running.result(timeout=60)
    assert response.status_code == 200, response.text[:2000]
    last = seen[-1]
    assert (last["job_count"], last["sampling_steps"], last["job_no"]) == (4, 900, 0), seen[-3:]
    assert last["sampling_step"] >= 2
    assert len(response.json()["images"]) == 0  # interrupted within the first of 4 jobs


def ui_generate(url: str, values: dict) -> list:
    """Press the img2img tab's Generate as the page does, with `values` by elem_id; its outputs."""
    config = requests.get(f"{url}/config", timeout=10).json()
    components = {component["id"]: component for component in config["components"]}

    def elem_id(component_id) -> str | None:
        return components.get(component_id, {}).get("props", {}).get("elem_id")  # 0: the page

    [(fn_index, generate)] = [
        (index, dependency)
        for index, dependency in enumerate(config["dependencies"])
        if "img2img_generate"
        in {elem_id(t[0] if isinstance(t, list) else t) for t in dependency["targets"]}
    ]
    data = [values.get(elem_id(i), components[i]["props"].get("value")) for i in generate["inputs"]]
    data[:2] = [
        "task(pbe-test)",
        2,
    ]  # the job id and the tab (2: Inpaint) the page's script fills in
    response = requests.post(
        f"{url}/run/predict",
        json={"fn_index": fn_index, "data": data, "session_hash": "pbe"},
        timeout=120,
    )
    assert response.status_code == 200, response.text[:2000]
    return response.json()["data"]


def data_url(picture: Image.Image) -> str:
    return "data:image/png;base64," + b64(picture)


def ui_values(image: Image.Image, mask: Image.Image, exemplar: Image.Image | None) -> dict:
    return {
        "img2maskimg": {"image": data_url(image), "mask": data_url(mask)},
        "img2img_override_settings": [],
        "img2img_steps": 3,
        "img2img_seed": 99,
        "img2img_batch_size": 2,
        "img2img_width": 64,
        "img2img_height": 64,
        "img2img_mask_blur": 2,
        "img2img_inpaint_full_res": "Only masked",
        "img2img_inpaint_full_res_padding": 8,
        "script_list": "Paint by Example",
        "script_paint_by_example_exemplar": None if exemplar is None else data_url(exemplar),
        "script_paint_by_example_sampler": "DDIM",
    }


@pytest.fixture
def webui_page(webui, request):
    """The webui's base url, for tests that press its gradio 3 page (skipped on Forge)."""
    if request.node.callspec.params["webui"] == "forge":
        pytest.skip(
            "Forge's img2img page is gradio 4 with its own inpaint canvas (ForgeCanvas): this "
            "test presses the webui's gradio 3 page; on Forge the API tests cover the script"
        )
    return webui[0]


def test_ui_generate_matches_the_api_and_saves(webui_page):
    url = webui_page
    image, mask = photo(), box_mask(photo().size, (20, 14, 40, 30))
    gallery, generation_info, _, log = ui_generate(url, ui_values(image, mask, exemplar_picture()))
    assert "error" not in log
    saved = [Path(item["name"].partition("?")[0]) for item in gallery]  # "?" + a time stamp
    assert len(saved) == 2 and all(path.is_file() for path in saved)
    assert json.loads(generation_info)["all_seeds"][:2] == [99, 100]
    api_pictures, _ = edit(url, request(image, mask, seed=99, batch_size=2, cfg_scale=7.0))
    for path, api_picture in zip(saved, api_pictures, strict=True):
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), api_picture)
        assert "PbE sampler: DDIM" in Image.open(path).info["parameters"]


def test_ui_shows_user_errors(webui_page):
    url = webui_page
    image = photo()
    values = ui_values(image, box_mask(image.size, (20, 14, 40, 30)), exemplar=None)
    gallery, _, _, log = ui_generate(url, values)
    assert not gallery
    assert "No exemplar: add the picture" in log and "PaintByExampleError" not in log


# ---------------------------------------------------------------------------------------------
# Arguments, interruption, honesty, model lists, messages, live preview (issue 9, 20-26), and
# the options colour match, best of N and LoRA. Every test above also runs on Forge with no
# checkpoint (issue 9, 20).


def only_masked_options(**changes) -> dict:
    """pbe_core's options for request()'s defaults on photo() with MASK_BOX."""
    box_side = max(MASK_BOX[2] - MASK_BOX[0], MASK_BOX[3] - MASK_BOX[1])
    options = {
        "seed": 1234,
        "steps": 3,
        "guidance": 5.0,
        "sampler": "ddim",
        "region": "auto",
        "context": 1.5 + 2 * 8 / box_side,
        "resolution": 64,
        "feather": int(2.5 * 2 + 0.5),
        "exemplar_mode": "squash",
    }
    return options | changes


MASK_BOX = (20, 14, 40, 30)


@pytest.mark.parametrize("sent", [1, 7])
def test_missing_trailing_script_args_take_their_defaults(webui, sent):
    """An old call's 7 arguments, or the exemplar alone (model: the first listed, PLMS)."""
    url, _ = webui
    image = photo()
    mask = box_mask(image.size, MASK_BOX)
    defaults = {"model": "diffusers", "sampler": "PLMS"} if sent == 1 else {}
    [full], _ = edit(url, request(image, mask, script_args(**defaults)))
    [short], info = edit(url, request(image, mask, script_args(**defaults)[:sent]))
    assert np.array_equal(short, full)
    assert f"PbE sampler: {defaults.get('sampler', 'DDIM')}" in info["infotexts"][0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (script_args() + ["extra"], "script_args has 12 values; Paint by Example takes at most 11"),
        (script_args(crop_context="wide"), "crop context must be a number from 1.0 to 4.0"),
        (script_args(exemplar_mode="tile"), "exemplar mode 'tile' is not one of"),
        (script_args(negative_weight=3), "negative exemplar weight must be a number"),
        (script_args(colour_match=1.5), "colour match must be a number from 0.0 to 1.0"),
        (script_args(best_of=0), "best of must be a number from 1 to 16"),
        (script_args(best_of=2.5), "best of must be a whole number"),
        (script_args(lora="absent.safetensors"), "LoRA 'absent.safetensors' is not in"),
        (script_args(lora="not_lora.safetensors"), "is not a Paint by Example LoRA (no LoRA)"),
        (script_args(lora=LORA, lora_strength="x"), "LoRA strength must be a number"),
        (script_args(exemplar=[1, 2]), "exemplar: expected an image or base64 text, got list"),
    ],
)
def test_invalid_script_args_are_400s_naming_the_argument(webui, args, needle):
    url, _ = webui
    image = photo()
    response = post(url, request(image, box_mask(image.size, MASK_BOX), args))
    assert response.status_code == 400, response.text[:2000]
    assert needle in response.json()["detail"], response.json()["detail"]


def test_interrupt_returns_the_finished_images_and_says_so(webui):
    url, _ = webui
    image = photo()
    mask = box_mask(image.size, MASK_BOX)
    payload = request(image, mask, steps=150, n_iter=4)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(post, url, payload)
        deadline = time.monotonic() + 300  # a shared CPU can be slow
        while not running.done() and time.monotonic() < deadline:
            state = requests.get(f"{url}/sdapi/v1/progress?skip_current_image=true", timeout=10)
            state = state.json()["state"]
            if state["job_no"] >= 1 and state["sampling_step"] >= 2:
                break
            time.sleep(0.05)
        requests.post(f"{url}/sdapi/v1/interrupt", timeout=10)
        response = running.result(timeout=300)
    assert response.status_code == 200, response.text[:2000]
    body = response.json()
    note = json.loads(body["info"])["extra_generation_params"]["Paint by Example"]
    assert note == "Interrupted after 1 of 4 batches: 1 finished image returned."
    [finished] = [np.asarray(unb64(text).convert("RGB")) for text in body["images"]]
    [whole], _ = edit(url, request(image, mask, steps=150))
    assert np.array_equal(finished, whole)


def config_component(url: str, elem_id: str) -> dict:
    config = requests.get(f"{url}/config", timeout=10).json()
    [component] = [c for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id]
    return component["props"]


def test_unused_tab_controls_are_named_and_kept_out_of_the_infotext(webui):
    url, _ = webui
    note = config_component(url, "script_paint_by_example_unused_controls")["value"].lower()
    for control in ("prompts", "denoising strength", "masked content", "sampling method"):
        assert control in note
    image = photo()
    [_], info = edit(
        url,
        request(
            image,
            box_mask(image.size, MASK_BOX),
            prompt="a red cat",
            negative_prompt="blurry",
            denoising_strength=0.3,
            inpainting_fill=2,
        ),
    )
    infotext = info["infotexts"][0]
    for unused in ("a red cat", "blurry", "Denoising strength", "Negative prompt", "Masked content"):
        assert unused not in infotext, (unused, infotext)
    assert infotext.startswith("Steps: 3, Sampler: DDIM, CFG scale: 5.0, Seed: 1234, Size: 64x64")


def test_model_and_lora_lists_say_what_is_left_out_and_why(webui):
    url, _ = webui
    model = config_component(url, "script_paint_by_example_model")
    assert model["choices"] in (["diffusers", MODEL], [["diffusers"] * 2, [MODEL] * 2])
    assert "not_pbe.safetensors: it has a Stable Diffusion UNet but not the exemplar encoder" in model["info"]
    lora = config_component(url, "script_paint_by_example_lora")
    assert "not_lora.safetensors: no LoRA" in lora["info"]
    assert "sd_lora" not in json.dumps(lora)  # the webui's own LoRAs: not listed, no word


def test_messages_name_no_internals(webui):
    url, _ = webui
    image = photo()
    payload = request(image, box_mask(image.size, MASK_BOX), script_args(exemplar=b64(image)[:40]))
    detail = post(url, payload).json()["detail"]
    assert detail.startswith("exemplar: not a base64-encoded image (its bytes are no image file)")
    assert "0x" not in detail and "BytesIO" not in detail and "Error" not in detail


def test_live_preview_follows_the_settings(webui):
    url, _ = webui
    image = photo()
    payload = request(image, box_mask(image.size, MASK_BOX), steps=900)

    def previews_while_sampling(enough) -> list:
        """current_image at each progress poll until enough(progress); then interrupts."""
        seen = []
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(post, url, payload)
            deadline = time.monotonic() + 60
            while not running.done() and time.monotonic() < deadline:
                progress = requests.get(f"{url}/sdapi/v1/progress", timeout=10).json()
                seen.append(progress["current_image"])
                if enough(progress):
                    break
                time.sleep(0.05)
            requests.post(f"{url}/sdapi/v1/interrupt", timeout=10)
            assert running.result(timeout=60).status_code == 200
        return seen

    *_, preview = (unb64(t) for t in previews_while_sampling(lambda p: p["current_image"]) if t)
    assert max(preview.size) == 64  # the working region, decoded by the model's own VAE
    requests.post(f"{url}/sdapi/v1/options", json={"live_previews_enable": False}, timeout=10)
    try:
        seen = previews_while_sampling(lambda p: p["state"]["sampling_step"] >= 40)
        assert len(seen) > 1 and not any(seen)
    finally:
        requests.post(f"{url}/sdapi/v1/options", json={"live_previews_enable": True}, timeout=10)


def test_colour_match_and_best_of_equal_pbe_core(webui):
    url, data_dir = webui
    image = photo()
    mask = box_mask(image.size, MASK_BOX)
    [picture], info = edit(url, request(image, mask, script_args(colour_match=0.7, best_of=3)))
    expected = pbe_core_edit(
        data_dir, image, mask, exemplar_picture(), **only_masked_options(colour_match=0.7, candidates=3)
    )
    assert max_difference(picture, expected) <= 2
    infotext = info["infotexts"][0]
    for field in ("PbE colour match: 0.7", "PbE best of: 3", "PbE best seed: 123", "PbE score: "):
        assert field in infotext, (field, infotext)
    pictures, info = edit(url, request(image, mask, script_args(best_of=2), batch_size=2))
    assert len(pictures) == 2 and info["all_seeds"][:2] == [1234, 1236]


def test_lora_applied_equals_lora_merged(webui):
    url, data_dir = webui
    image = photo()
    mask = box_mask(image.size, MASK_BOX)
    [plain], _ = edit(url, request(image, mask))
    [picture], info = edit(url, request(image, mask, script_args(lora=LORA, lora_strength=0.8)))
    expected = pbe_core_edit(data_dir, image, mask, exemplar_picture(), lora=0.8, **only_masked_options())
    assert max_difference(picture, expected) <= 2
    assert max_difference(picture, plain) > 20
    assert f"PbE LoRA: {LORA}, PbE LoRA strength: 0.8" in info["infotexts"][0]


# ---------------------------------------------------------------------------------------------
# install.py (no webui needed)


@pytest.fixture
def installer():
    spec = importlib.util.spec_from_file_location("pbe_install", REPO / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # main() runs only as a script
    return module


def test_installer_reads_requirements_and_versions(installer):
    assert installer.requirement_lines() == [
        line.strip()
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if line.strip()
    ]
    assert installer.is_satisfied("numpy")
    assert not installer.is_satisfied("numpy>=999")
    assert not installer.is_satisfied("surely-not-an-installed-package-pbe>=1")


def test_installer_installs_only_what_is_missing_and_never_torch(installer, monkeypatch):
    installed = []
    monkeypatch.setattr(
        installer, "requirement_lines", lambda: ["torch>=99", "numpy", "absent-pbe>=1"]
    )
    monkeypatch.setattr(installer, "pip_install", installed.append)
    installer.main()
    assert installed == ["absent-pbe>=1"]


def test_installer_uses_the_webui_pip_where_launch_exists(installer, monkeypatch):
    calls = []
    monkeypatch.setattr(
        installer.subprocess, "check_call", lambda command: calls.append(("pip", command))
    )
    monkeypatch.setitem(sys.modules, "launch", None)  # no webui: import fails
    installer.pip_install("absent-pbe>=1")
    webui_launch = types.SimpleNamespace(
        run_pip=lambda command, desc: calls.append(("webui", command))
    )
    monkeypatch.setitem(sys.modules, "launch", webui_launch)
    installer.pip_install("absent-pbe>=1")
    assert calls == [
        ("pip", [sys.executable, "-m", "pip", "install", "absent-pbe>=1"]),
        ("webui", 'install "absent-pbe>=1"'),
    ]
