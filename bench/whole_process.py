"""A whole edit as a user runs it, one fresh process each: ours (`python -m pbe_core edit`) vs
diffusers' PaintByExamplePipeline (a script: build from the folder, edit, save), both at one dtype.

    .venv/bin/python bench/whole_process.py [--workdir /tmp/pbe-bench] [--size 256] [--steps 8]
        [--sampler ddim|plms] [--dtypes fp32,bf16] [--repeats 1] [--no-malloc-tuning]

Same weights (the full-size random model of WORKDIR/full/diffusers, written once by
bench/_common.py), same job: a SIZE x SIZE scene with a box mask, one exemplar, STEPS steps of
SAMPLER, guidance 5, seed 0. Ours runs with --compat diffusers --region full --feather 0 (the
same work as diffusers' pipeline); diffusers loads with `torch_dtype`. Each column is one
process from start to exit: imports, load, edit, write the PNG. `wall s` is the process's wall
time, `cpu s` its user + system CPU seconds (the steadier figure when the machine is shared),
`peak MiB` its peak RSS (ru_maxrss from wait4). The weights are read once before each process,
so both start from a warm page cache. With REPEATS > 1 the fastest run is kept.
`--no-malloc-tuning` also runs ours without the CLI's glibc heap settings
(`keep_freed_blocks_in_the_heap` in `pbe_core/__main__.py`), to show what they buy.

Issue targets, ours / diffusers: fp32 time <= 0.7, peak <= 0.6; bf16 time <= 0.6, peak <= 0.5.
Time on this 2-core machine at the defaults: about 4 minutes (more for 512 px, 50 steps).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
from pipeline_speed import box_mask, exemplar, scene

DTYPES = {"fp32": "float32", "bf16": "bfloat16"}

# A diffusers user's script: build the pipeline from the folder's components (the library name
# `paint_by_example` is refused by `DiffusionPipeline.from_pretrained`), edit, save.
DIFFUSERS_SCRIPT = """
import sys, torch, diffusers
from diffusers.pipelines.deprecated.paint_by_example import PaintByExampleImageEncoder
from transformers import CLIPImageProcessor
from PIL import Image
folder, dtype, scene, mask, exemplar, out, size, steps, sampler = sys.argv[1:]
dtype, size, steps = getattr(torch, dtype), int(size), int(steps)
schedule = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                beta_schedule="scaled_linear", steps_offset=1)
scheduler = (diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **schedule)
             if sampler == "ddim" else diffusers.PNDMScheduler(skip_prk_steps=True, **schedule))
pipe = diffusers.PaintByExamplePipeline(
    vae=diffusers.AutoencoderKL.from_pretrained(folder + "/vae", torch_dtype=dtype),
    image_encoder=PaintByExampleImageEncoder.from_pretrained(folder + "/image_encoder", torch_dtype=dtype),
    unet=diffusers.UNet2DConditionModel.from_pretrained(folder + "/unet", torch_dtype=dtype),
    scheduler=scheduler, feature_extractor=CLIPImageProcessor.from_pretrained(folder + "/feature_extractor"),
    safety_checker=None, requires_safety_checker=False,
)
pipe.set_progress_bar_config(disable=True)
[image] = pipe(image=Image.open(scene), mask_image=Image.open(mask), example_image=Image.open(exemplar),
               height=size, width=size, num_inference_steps=steps, guidance_scale=5.0,
               generator=torch.Generator().manual_seed(0)).images
image.save(out)
"""

# The CLI without its heap settings: main() itself, as `python -m pbe_core` runs it.
OURS_PLAIN = "import sys; from pbe_core.cli import main; sys.exit(main(sys.argv[1:]))"


def write_inputs(workdir: Path, size: int) -> dict[str, Path]:
    """pipeline_speed's scene, box mask and exemplar, as PNG files for the two command lines."""
    box = (size * 3 // 8, size // 4, size * 5 // 8, size * 3 // 4)
    pictures = {"scene": scene(size), "mask": box_mask(size, box), "exemplar": exemplar()}
    paths = {name: workdir / f"whole-{name}-{size}.png" for name in pictures}
    for name, picture in pictures.items():
        picture.save(paths[name])
    return paths


def warm_page_cache(folder: str) -> None:
    """Read the weights once before each side, so that neither side's time depends on what the
    kernel kept cached (on this VM it drops gigabytes of page cache between runs)."""
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                while handle.read(64 << 20):
                    pass


def measure(command: list[str]) -> dict:
    """Wall seconds, CPU seconds and peak RSS (MiB) of one process; fails loudly."""
    with tempfile.TemporaryFile("w+") as errors:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if child.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"{command[:4]} failed (rc {child.returncode}):\n{errors.read()[-3000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/pbe-bench", help="cache of the random weights")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--sampler", default="ddim", choices=("ddim", "plms"))
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--repeats", type=int, default=1, help="processes per row (fastest kept)")
    parser.add_argument("--no-malloc-tuning", action="store_true", help="also run ours without it")
    options = parser.parse_args()
    workdir = Path(options.workdir)
    folder = str(_common.ensure_weights(workdir) / "diffusers")
    inputs = write_inputs(workdir, options.size)
    out = workdir / "whole-out.png"
    job = [str(inputs["scene"]), str(inputs["mask"]), str(inputs["exemplar"]), str(out)]
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"{options.size}x{options.size}, {options.sampler} {options.steps} steps, guidance 5, CPU")
    print(f"{'':26} {'wall s':>7} {'cpu s':>7} {'peak MiB':>9}")
    for name in options.dtypes.split(","):
        dtype = DTYPES[name]
        ours_args = [
            "edit", "--model", folder, "--image", job[0], "--mask", job[1], "--exemplar", job[2],
            "--out", job[3], "--steps", str(options.steps), "--sampler", options.sampler,
            "--guidance", "5", "--seed", "0", "--compat", "diffusers", "--region", "full",
            "--feather", "0", "--device", "cpu", "--dtype", name, "--quiet",
        ]
        commands = {
            "diffusers": [sys.executable, "-c", DIFFUSERS_SCRIPT, folder, dtype, *job, str(options.size),
                          str(options.steps), options.sampler],
            "ours": [sys.executable, "-m", "pbe_core", *ours_args],
        }
        if options.no_malloc_tuning:
            commands["ours, no malloc tuning"] = [sys.executable, "-c", OURS_PLAIN, *ours_args]
        found = {}
        for label, command in commands.items():
            runs = []
            for _ in range(options.repeats):
                warm_page_cache(folder)
                runs.append(measure(command))
            found[label] = min(runs, key=lambda run: run["wall"])
            run = found[label]
            print(f"{name + ' ' + label:26} {run['wall']:7.1f} {run['cpu']:7.1f} {run['peak_mib']:9.0f}", flush=True)
        base = found["diffusers"]
        for label, run in found.items():
            if label != "diffusers":
                print(f"  {name} {label} / diffusers: time {run['wall'] / base['wall']:.2f}, "
                      f"cpu {run['cpu'] / base['cpu']:.2f}, peak RSS {run['peak_mib'] / base['peak_mib']:.2f}")


if __name__ == "__main__":
    main()
