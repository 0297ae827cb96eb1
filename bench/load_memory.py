"""Peak memory and time of loading a full-size Paint by Example model: ours vs diffusers.

    .venv/bin/python bench/load_memory.py [--workdir /tmp/pbe-bench] [--accelerate-site DIR]

The model is full size (SD 1.x UNet, SD VAE, CLIP ViT-L/14 + mapper: 1.31 B parameters, fp32,
about 5 GiB) with random weights, written once into WORKDIR/full/ in three layouts. Every load
runs in a fresh process that first imports torch, diffusers, transformers and pbe_core, then
loads, then reads every weight once (a sum per tensor, so lazily mapped files are paged in):

- ours: `pbe_core.checkpoint.load_models` on the diffusers folder, the single-file
  .safetensors and the original Lightning .ckpt;
- diffusers: `UNet2DConditionModel`, `AutoencoderKL` and `PaintByExampleImageEncoder`
  `.from_pretrained` of the same diffusers folder, with low_cpu_mem_usage=False (what diffusers
  forces when accelerate is missing; old versions then built a randomly initialised model and
  copied the weights in) and, where accelerate can be imported, with low_cpu_mem_usage=True
  (its default then). The CLIP encoder loads through transformers, which ignores the flag.

Columns: `load MiB` = peak RSS (ru_maxrss) after the load minus that after the imports;
`touched MiB` = the same after reading every weight (what holding the model really costs when
the loader maps the file lazily); `anon/file` = resident anonymous vs file-backed memory at the
end (file-backed pages are page cache the kernel can drop and share); `s` = load seconds.
Ratios are ours / diffusers-without-accelerate (and / diffusers-with-accelerate when
measured): below 1 means ours uses less. Numbers move with the page cache: the first load
after writing the files finds them cached, as every later one does.

accelerate is not a project dependency; to measure diffusers with it without touching the
venv:  .venv/bin/python -m pip install --no-deps --target /tmp/pbe-bench/accelerate-site \
accelerate psutil
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _common

OURS = {
    "ours: diffusers folder": "diffusers",
    "ours: single-file .safetensors": "safetensors",
    "ours: original .ckpt": "ckpt",
}
NO_ACCELERATE = "diffusers, low_cpu_mem_usage=False"
ACCELERATE = "diffusers + accelerate"


def child(kind: str, path: str) -> None:
    """Runs in a fresh process: import, measure the baseline, load, touch every weight."""
    import gc

    import diffusers  # noqa: F401 - imported by every child so that baselines match
    import torch

    from pbe_core.checkpoint import load_models

    torch.set_grad_enabled(False)
    gc.collect()
    baseline = _common.peak_rss_mib()
    started = time.perf_counter()
    if kind == "ours":
        loaded = load_models(path)
        models = [loaded.unet, loaded.vae, loaded.encoder]
    else:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from diffusers.pipelines.deprecated.paint_by_example import PaintByExampleImageEncoder

        folder = Path(path)
        # Without accelerate diffusers forces low_cpu_mem_usage=False; transformers 5 ignores it.
        low_memory = {"low_cpu_mem_usage": kind == "diffusers+accelerate"}
        models = [
            UNet2DConditionModel.from_pretrained(folder / "unet", **low_memory),
            AutoencoderKL.from_pretrained(folder / "vae", **low_memory),
            PaintByExampleImageEncoder.from_pretrained(folder / "image_encoder"),
        ]
    seconds = time.perf_counter() - started
    load_peak = _common.peak_rss_mib()
    for tensor in (t for m in models for t in (*m.parameters(), *m.buffers())):
        tensor.float().sum()  # pages lazily mapped weights in
    _common.report({
        "seconds": seconds,
        "load_mib": load_peak - baseline,
        "touched_mib": _common.peak_rss_mib() - baseline,
        "anon_mib": _common.status_mib("RssAnon"),
        "file_mib": _common.status_mib("RssFile"),
        "parameters": sum(p.numel() for m in models for p in m.parameters()),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="/tmp/pbe-bench", help="cache of the random weights")
    parser.add_argument(
        "--accelerate-site",
        default="/tmp/pbe-bench/accelerate-site",
        help="a pip --target folder holding accelerate, used when the venv has none",
    )
    options = parser.parse_args()
    folder = _common.ensure_weights(options.workdir)
    site = _common.accelerate_path(options.accelerate_site)

    runs: dict[str, tuple[list[str], str | None]] = {
        label: (["ours", str(folder / _common.LAYOUT_FILES[layout])], None)
        for label, layout in OURS.items()
    }
    diffusers_folder = str(folder / "diffusers")
    # low_cpu_mem_usage=False is what diffusers does without accelerate, so it is measurable
    # either way; the accelerate path only where accelerate imports.
    runs[NO_ACCELERATE] = (["diffusers", diffusers_folder], None)
    if site is not None:
        runs[ACCELERATE] = (["diffusers+accelerate", diffusers_folder], site or None)
    print("accelerate: " + (
        "not installed (diffusers then loads with low_cpu_mem_usage=False)" if site is None
        else "installed in the venv" if site == ""
        else f"not in the venv; imported from {site} for the accelerate run only"
    ))

    results = {}
    print(f"{'loader':34} {'load MiB':>9} {'touched MiB':>12} {'anon/file MiB':>15} {'s':>6}")
    for label, (args, extra_path) in runs.items():
        result = _common.run_child([__file__, "--child", *args], extra_path)
        results[label] = result
        print(
            f"{label:34} {result['load_mib']:9.0f} {result['touched_mib']:12.0f} "
            f"{result['anon_mib']:7.0f}/{result['file_mib']:<7.0f} {result['seconds']:6.1f}"
        )
    print(f"parameters: {next(iter(results.values()))['parameters'] / 1e9:.3f} B")
    for reference in (NO_ACCELERATE, ACCELERATE):
        if reference not in results:
            continue
        base = results[reference]
        print(f"ratios ours / {reference}  (load MiB, touched MiB, seconds):")
        for label in OURS:
            ours = results[label]
            print(
                f"  {label:32} {ours['load_mib'] / base['load_mib']:6.2f} "
                f"{ours['touched_mib'] / base['touched_mib']:6.2f} "
                f"{ours['seconds'] / base['seconds']:6.2f}"
            )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()
