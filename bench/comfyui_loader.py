"""The pack's model loader against ComfyUI's stock CheckpointLoaderSimple, in ComfyUI's own Python.

    .venv/bin/python bench/comfyui_loader.py [--workdir /tmp/pbe-bench]
        [--comfyui DIR (default $COMFYUI_DIR)] [--comfy-python PY (default $COMFYUI_PYTHON)]

Each row is one fresh ComfyUI-Python process (ComfyUI's folder on sys.path, CPU) that loads one
checkpoint once, as the node would when a workflow runs; the time is that call alone (imports
excluded), the peak its ru_maxrss:
- pack: `Load Paint by Example Model` (nodes/model.py `load_all(read_weights(path))`) on the
  full-size random Paint by Example model, WORKDIR/full/model.safetensors (UNet, VAE, exemplar
  encoder: 1.31 B parameters, fp32);
- stock, SD 1.5 inpainting: `comfy.sd.load_checkpoint_guess_config` (what CheckpointLoaderSimple
  runs) on a checkpoint of the same kind and nearly the same size: the same UNet and VAE tensors
  with a random CLIP ViT-L/14 text encoder in place of the exemplar encoder
  (WORKDIR/full/sd15-inpainting.safetensors, written once);
- stock, this file: the stock loader on the Paint by Example file itself (it reads the UNet and
  VAE, finds no text encoder and skips the exemplar encoder: less work than the pack's).

Both files are read once before the runs, so every row reads from the page cache. Compare
seconds per GB as well as seconds: the files differ in size. Numbers from one run only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import _common

REPO = Path(__file__).resolve().parents[1]
TEXT_PREFIX = "cond_stage_model.transformer."


def make_sd15_inpainting(source: str, target: str) -> None:
    """SD 1.5 inpainting's layout: the source's UNet and VAE, a random ViT-L/14 text encoder."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from pbe_core.testing import randomize

    config = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                            num_hidden_layers=12, projection_dim=768)
    with torch.device("meta"):
        text = CLIPTextModel(config)
    randomize(text.to_empty(device="cpu"), torch.Generator().manual_seed(1))
    tensors = {TEXT_PREFIX + name: value.contiguous() for name, value in text.state_dict().items()}
    with safe_open(source, "pt") as weights:
        for name in weights.keys():
            if name.startswith(("model.diffusion_model.", "first_stage_model.")):
                tensors[name] = weights.get_tensor(name)
    partial = target + ".partial"
    save_file(tensors, partial)
    os.replace(partial, target)


def load_child(comfyui: str, pack_parent: str, kind: str, path: str) -> None:
    """In ComfyUI's Python: load `path` once with the pack's loader or the stock one."""
    import time

    sys.path.insert(0, comfyui)
    os.chdir(comfyui)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # as `main.py --cpu`: this script parses no arguments
    import comfy.model_management
    import comfy.sd
    import folder_paths  # noqa: F401  (the pack's folders module needs it registered first)

    if kind == "pack":
        sys.path.insert(0, pack_parent)
        from comfyui_paint_by_example.nodes.model import load_all
        from comfyui_paint_by_example.pbe_core.checkpoint import read_weights

        def load():
            return load_all(read_weights(path))
    else:
        def load():
            return comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True)

    started = time.perf_counter()
    outputs = load()
    seconds = time.perf_counter() - started
    unet = outputs[0]
    _common.report({"load_s": seconds, "peak_mib": _common.peak_rss_mib(),
                    "device": str(comfy.model_management.get_torch_device()),
                    "unet_dtype": str(unet.model.get_dtype()),
                    "outputs": [type(o).__name__ for o in outputs]})


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "load-child":
        load_child(*sys.argv[2:6])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "make-sd15":
        make_sd15_inpainting(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/pbe-bench")
    _common.add_comfyui_arguments(parser)
    args = parser.parse_args()
    _common.require_comfyui(parser, args)
    folder = _common.ensure_weights(args.workdir)
    pbe, sd15 = folder / "model.safetensors", folder / "sd15-inpainting.safetensors"
    if not sd15.is_file():
        print(f"writing {sd15} (once)")
        subprocess.run([sys.executable, __file__, "make-sd15", str(pbe), str(sd15)], check=True)
    for path in (pbe, sd15):  # into the page cache, so that no row pays the disk
        with open(path, "rb") as file:
            while file.read(64 * _common.MIB):
                pass
    rows = {}
    with tempfile.TemporaryDirectory(prefix="pbe-loader-bench-") as tmp:
        pack = Path(tmp, "comfyui_paint_by_example")
        pack.mkdir()
        for part in _common.PACK_PARTS:
            (pack / part).symlink_to(REPO / part)
        for name, kind, path in (("pack, Paint by Example file", "pack", pbe),
                                 ("stock, SD 1.5 inpainting file", "stock", sd15),
                                 ("stock, Paint by Example file", "stock", pbe)):
            result = _common.run_child([__file__, "load-child", args.comfyui, tmp, kind, str(path)],
                                       python=args.comfy_python)
            rows[name] = result | {"gb": path.stat().st_size / 1e9}
    print(f"ComfyUI loaders, CPU ({next(iter(rows.values()))['device']}), files in the page cache")
    print(f"{'':32}{'file GB':>8}{'load s':>8}{'s/GB':>7}{'peak MiB':>10}  UNet dtype, outputs")
    for name, row in rows.items():
        print(f"{name:32}{row['gb']:8.2f}{row['load_s']:8.1f}{row['load_s'] / row['gb']:7.2f}"
              f"{row['peak_mib']:10.0f}  {row['unet_dtype']}, {' '.join(row['outputs'])}")
    ours, stock = rows["pack, Paint by Example file"], rows["stock, SD 1.5 inpainting file"]
    print(f"\npack / stock (SD 1.5 inpainting): time {ours['load_s'] / stock['load_s']:.2f}, "
          f"per GB {(ours['load_s'] / ours['gb']) / (stock['load_s'] / stock['gb']):.2f}, "
          f"peak {ours['peak_mib'] / stock['peak_mib']:.2f}")


if __name__ == "__main__":
    main()
