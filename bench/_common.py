"""Shared helpers of the benchmarks: full-size random weights, fresh-subprocess runs, memory.

Not a benchmark itself. `python bench/_common.py make-weights WORKDIR` writes a full-size
(SD 1.x UNet, SD VAE, CLIP ViT-L/14 + mapper: about 1.31 B parameters) random-weight Paint by
Example model into WORKDIR/full/ in the three layouts (model.ckpt, model.safetensors,
diffusers/); the benchmarks call it once and reuse the files (about 16 GB of disk).

Memory: the benchmark driver never imports torch, so that every measured child starts from a
small forked process (a child's ru_maxrss starts at its parent's RSS at fork time).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULT_TAG = "BENCH-RESULT "
LAYOUT_FILES = {"ckpt": "model.ckpt", "safetensors": "model.safetensors", "diffusers": "diffusers"}
MIB = 1024 * 1024


def model_dir(workdir: str | Path) -> Path:
    return Path(workdir) / "full"


def ensure_weights(workdir: str | Path) -> Path:
    """The full-size random model in every layout, written by a child process on first use."""
    folder = model_dir(workdir)
    if not (folder / "READY.json").is_file():
        print(f"writing full-size random weights to {folder} (once; about 16 GB, a few minutes)")
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "make-weights", str(workdir)], check=True)
        print(f"  done in {time.perf_counter() - started:.0f} s")
    return folder


def make_weights(workdir: str | Path) -> None:
    """Build the models on the meta device, give every parameter random values (no default
    init: it would cost as much again), write the layouts one by one (one copy in memory)."""
    import torch

    from pbe_core.checkpoint import Models, weights_of
    from pbe_core.models.configs import EncoderConfig, UNetConfig, VAEConfig
    from pbe_core.models.exemplar_encoder import ExemplarEncoder
    from pbe_core.models.unet import UNet
    from pbe_core.models.vae import AutoencoderKL
    from pbe_core.testing import randomize, write_layout

    generator = torch.Generator().manual_seed(0)
    with torch.device("meta"):
        unet, vae, encoder = UNet(UNetConfig()), AutoencoderKL(VAEConfig()), ExemplarEncoder(EncoderConfig())
    for model in (unet, vae, encoder):
        randomize(model.to_empty(device="cpu"), generator).eval().requires_grad_(False)
    weights = weights_of(Models(unet, vae, encoder, "original"))
    folder = model_dir(workdir)
    for layout in LAYOUT_FILES:
        write_layout(weights, layout, folder)
    count = sum(p.numel() for m in (unet, vae, encoder) for p in m.parameters())
    (folder / "READY.json").write_text(json.dumps({"parameters": count}))


# ---------------------------------------------------------------------------------------------
# ComfyUI benchmarks

# What of this repo a ComfyUI custom_nodes folder needs (linked, not copied).
PACK_PARTS = ("__init__.py", "nodes", "pbe_core", "web", "example_workflows")


def add_comfyui_arguments(parser) -> None:
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_DIR"),
                        help="a ComfyUI folder (default: $COMFYUI_DIR, as the host tests)")
    parser.add_argument("--comfy-python", default=os.environ.get("COMFYUI_PYTHON", sys.executable),
                        help="its python (default: $COMFYUI_PYTHON, else this one)")


def require_comfyui(parser, args) -> None:
    if not args.comfyui or not Path(args.comfyui, "main.py").is_file():
        parser.error("no ComfyUI: pass --comfyui DIR (a ComfyUI folder) or set COMFYUI_DIR")


# ---------------------------------------------------------------------------------------------
# Measuring inside a child


def peak_rss_mib() -> float:
    """The process's peak resident set (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def status_mib(field: str) -> float:
    """A `/proc/self/status` memory field (VmHWM, VmRSS, RssAnon, RssFile) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak_rss() -> None:
    """Restart the peak-RSS counter (VmHWM) at the current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def report(result: dict) -> None:
    print(RESULT_TAG + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------
# Driving children


def run_child(args: list[str], extra_path: str | None = None, python: str = sys.executable) -> dict:
    """Run `PYTHON ARGS` in a fresh process; return the dict it reported. Fails loudly."""
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, env.get("PYTHONPATH")) if p)
    done = subprocess.run([python, *args], capture_output=True, text=True, env=env)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line.removeprefix(RESULT_TAG))
    raise RuntimeError(f"child {args} failed (rc {done.returncode}):\n{done.stderr[-4000:]}")


def accelerate_path(site: str) -> str | None:
    """Where `accelerate` imports from: "" for the venv itself, `site` (a pip --target folder)
    when only there, None when nowhere."""
    if subprocess.run([sys.executable, "-c", "import accelerate"], capture_output=True).returncode == 0:
        return ""
    return site if Path(site, "accelerate").is_dir() else None


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "make-weights":
        sys.exit("usage: python bench/_common.py make-weights WORKDIR")
    make_weights(sys.argv[2])
