"""One edit in ComfyUI through the pack's all-in-one node vs the same edit through pbe_core.

    .venv/bin/python bench/comfyui_speed.py [--workdir /tmp/pbe-bench] [--size 256] [--steps 8]
        [--comfyui DIR (default $COMFYUI_DIR)] [--comfy-python PY (default $COMFYUI_PYTHON)]

Same weights (the full-size random model WORKDIR/full/model.safetensors, written once by
bench/_common.py: 1.31 B parameters), same job: the SIZE x SIZE scene of bench/whole_process.py
(WORKDIR/whole-{scene,mask,exemplar}-SIZE.png, a box mask), STEPS steps of DDIM, guidance 5,
region "full" (the node's "full image"), feather 0, exemplar squashed, CPU.

- node: ComfyUI started with --cpu and --base-directory in a temporary folder (the pack and the
  weights linked in, as tests/test_comfyui_host.py does), an API prompt LoadImage (scene),
  LoadImageMask (the mask's red channel), LoadImage (exemplar), PaintByExampleModelLoader,
  PaintByExampleEdit (ddim / ddim_uniform, cfg 5), SaveImage. Time: wall seconds from POST
  /prompt until /history holds the finished entry. Run 1 (seed 0) includes loading the model;
  run 2 (seed 1) reuses the cached loader output, so it is the edit alone plus ComfyUI's
  overhead (queue, image nodes, PNG write). The dtype is the one ComfyUI logs for the model.
- core: a fresh process, `PaintByExample.from_pretrained(..., device="cpu", dtype=float32)`,
  then `pipe.run(...)` twice (seeds 0, 1), the second kept (the first includes first-call set-up).
  It runs twice: in this Python, and in ComfyUI's (its torch, with this repo on PYTHONPATH), so
  that node / core compares the same torch build.

The ratio node / core near 1 means the node adds little over the library. The pack's loader
against ComfyUI's stock CheckpointLoaderSimple: bench/comfyui_loader.py. Compare only numbers
from one run; the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import _common

REPO = Path(__file__).resolve().parents[1]


def core_child(model: str, scene: str, mask: str, exemplar: str, steps: int) -> None:
    """In a fresh process: load, run twice, report both run times."""
    import torch
    from PIL import Image

    from pbe_core.pipeline import PaintByExample

    started = time.perf_counter()
    pipe = PaintByExample.from_pretrained(model, device="cpu", dtype=torch.float32)
    load_s = time.perf_counter() - started
    images = [Image.open(p) for p in (scene, mask, exemplar)]
    times = []
    for seed in (0, 1):
        started = time.perf_counter()
        pipe.run(*images, steps=steps, sampler="ddim", guidance=5.0, seed=seed, region="full",
                 feather=0, exemplar_mode="squash")
        times.append(time.perf_counter() - started)
    _common.report({"load_s": load_s, "run1_s": times[0], "run2_s": times[1],
                    "dtype": str(next(pipe.models.unet.parameters()).dtype),
                    "torch": torch.__version__.split("+")[0]})


def http(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def prompt(size: int, steps: int, seed: int) -> dict:
    edit = {"seed": seed, "steps": steps, "cfg": 5.0, "sampler_name": "ddim",
            "scheduler": "ddim_uniform", "region": "full image", "context": 1.5,
            "resolution": 512, "grow": 0, "feather": 0, "exemplar_mode": "squash",
            "exemplar_mask_marks": "background", "colour_match": 0, "fill_holes": False,
            "mask_hipass": 0, "multiple": 8, "min_size": 128, "max_aspect": 2,
            "model": ["1", 0], "vae": ["1", 1], "encoder": ["1", 2],
            "image": ["2", 0], "mask": ["3", 0], "exemplar": ["4", 0]}
    return {
        "1": {"class_type": "PaintByExampleModelLoader", "inputs": {"ckpt_name": "model.safetensors"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": f"whole-scene-{size}.png"}},
        "3": {"class_type": "LoadImageMask",
              "inputs": {"image": f"whole-mask-{size}.png", "channel": "red"}},
        "4": {"class_type": "LoadImage", "inputs": {"image": f"whole-exemplar-{size}.png"}},
        "5": {"class_type": "PaintByExampleEdit", "inputs": edit},
        "6": {"class_type": "SaveImage", "inputs": {"filename_prefix": "bench", "images": ["5", 0]}},
    }


def timed_prompt(url: str, workflow: dict, timeout: float = 1800) -> float:
    """Wall seconds from POST /prompt to a completed /history entry; fails on a node error."""
    started = time.perf_counter()
    prompt_id = http(f"{url}/prompt", {"prompt": workflow, "client_id": "pbe-bench"})["prompt_id"]
    while time.perf_counter() - started < timeout:
        entry = http(f"{url}/history/{prompt_id}").get(prompt_id)
        if entry and entry["status"].get("completed") is not None:
            elapsed = time.perf_counter() - started
            if entry["status"]["status_str"] != "success":
                raise RuntimeError(f"prompt failed: {entry['status']['messages']}")
            return elapsed
        time.sleep(0.05)
    raise RuntimeError(f"prompt did not finish in {timeout} s")


def comfyui_runs(args, folder: Path, inputs: dict[str, Path]) -> dict:
    """Start ComfyUI in a temporary base directory, run the edit twice, stop it."""
    with tempfile.TemporaryDirectory(prefix="pbe-comfy-bench-") as tmp:
        base = Path(tmp)
        for name in ("custom_nodes", "input", "output", "temp", "user", "models/paint_by_example"):
            (base / name).mkdir(parents=True)
        pack = base / "custom_nodes" / "comfyui-paint-by-example"
        pack.mkdir()
        for part in _common.PACK_PARTS:
            (pack / part).symlink_to(REPO / part)
        (base / "models/paint_by_example/model.safetensors").symlink_to(folder / "model.safetensors")
        for path in inputs.values():
            (base / "input" / path.name).symlink_to(path)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        log_path = base / "comfyui.log"
        command = [args.comfy_python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port",
                   str(port), "--base-directory", str(base), "--disable-auto-launch"]
        with open(log_path, "wb") as log:
            server = subprocess.Popen(command, cwd=args.comfyui, stdout=log, stderr=subprocess.STDOUT,
                                      env=dict(os.environ, PYTHONUNBUFFERED="1"))
        url = f"http://127.0.0.1:{port}"
        try:
            started = time.perf_counter()
            while True:
                if server.poll() is not None or time.perf_counter() - started > 180:
                    raise RuntimeError(f"ComfyUI did not start:\n{log_path.read_text()[-3000:]}")
                try:
                    if http(f"{url}/object_info/PaintByExampleEdit"):
                        break
                except (OSError, ValueError):
                    time.sleep(0.3)
            start_s = time.perf_counter() - started
            run1 = timed_prompt(url, prompt(args.size, args.steps, seed=0))
            run2 = timed_prompt(url, prompt(args.size, args.steps, seed=1))
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        log_text = log_path.read_text(errors="replace")
    dtypes = sorted(set(re.findall(r"model weight dtype [^\n]*", log_text)))
    return {"start_s": start_s, "run1_s": run1, "run2_s": run2, "dtype": "; ".join(dtypes) or "?"}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "core-child":
        core_child(*sys.argv[2:6], int(sys.argv[6]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/pbe-bench")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    _common.add_comfyui_arguments(parser)
    args = parser.parse_args()
    _common.require_comfyui(parser, args)
    folder = _common.ensure_weights(args.workdir)
    inputs = {kind: Path(args.workdir) / f"whole-{kind}-{args.size}.png"
              for kind in ("scene", "mask", "exemplar")}
    missing = [str(p) for p in inputs.values() if not p.is_file()]
    if missing:
        sys.exit(f"missing inputs {missing}: run bench/whole_process.py --size {args.size} once")
    print(f"{args.size} px, {args.steps} DDIM steps, guidance 5, region full, feather 0, CPU")
    child = [__file__, "core-child", str(folder / "model.safetensors"),
             *(str(inputs[k]) for k in ("scene", "mask", "exemplar")), str(args.steps)]
    core = _common.run_child(child)
    core_there = _common.run_child(child, extra_path=str(REPO), python=args.comfy_python)
    node = comfyui_runs(args, folder, inputs)
    there = f"core, torch {core_there['torch']}"
    print(f"\n{'':28}{'node (ComfyUI)':>16}{there:>22}{'core, torch ' + core['torch']:>22}")
    for label, key in (("first run (node: +load) s", "run1_s"), ("second run s", "run2_s")):
        print(f"{label:28}{node[key]:16.1f}{core_there[key]:22.1f}{core[key]:22.1f}")
    print(f"{'load s':28}{'(in run 1)':>16}{core_there['load_s']:22.1f}{core['load_s']:22.1f}")
    print(f"{'ComfyUI start s':28}{node['start_s']:16.1f}")
    print(f"\nnode / core, second run, same torch ({core_there['torch']}): "
          f"{node['run2_s'] / core_there['run2_s']:.2f}")
    print(f"node / core, second run, each its own torch: {node['run2_s'] / core['run2_s']:.2f}")
    print(f"node first run / (core load + first run), same torch: "
          f"{node['run1_s'] / (core_there['load_s'] + core_there['run1_s']):.2f}")
    print(f"dtypes: ComfyUI {node['dtype']}; core {core['dtype']}")

if __name__ == "__main__":
    main()
