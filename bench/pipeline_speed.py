"""Wall time and peak memory of one edit: our `PaintByExample.run` vs diffusers' pipeline.

    .venv/bin/python bench/pipeline_speed.py [--workdir /tmp/pbe-bench] [--size 256]
        [--steps 10] [--region-steps 3] [--repeats 1] [--threads N]
        [--ours-dtype float32|bfloat16] [--skip-region]

Same weights (the full-size random model of WORKDIR/full/diffusers, written once: SD 1.x UNet,
SD VAE, CLIP ViT-L/14 + mapper, 1.31 B parameters, CPU) and the same job: a SIZE x SIZE image
with a box mask, one exemplar, DDIM, STEPS steps, guidance 5, seed 0. Ours runs with
compat="diffusers", region="full", feather=0, so both do the same work (cropped exemplar,
posterior sample, nearest latent mask, one batched cond+uncond UNet call per step). diffusers'
pipeline is built from its components (UNet2DConditionModel, AutoencoderKL,
PaintByExampleImageEncoder, DDIMScheduler with the SD 1.x schedule, CLIPImageProcessor), as
`from_pretrained` of the whole pipeline refuses the `paint_by_example` library name.

Each measurement is a fresh process: imports, load, every weight read once (both loaders map
the files lazily), then REPEATS timed runs (the fastest is kept; the first run includes the
first-call kernel set-up, for both). Columns:
- `wall s`, `cpu s`: the run's wall and CPU seconds (CPU = all threads, user + system; the
  steadier number when other work shares the machine); `sys s`, `faults k`: its system-CPU
  seconds and minor page faults (thousands): high values mean memory is being returned to
  the OS and faulted back in on every step;
- `enc/vae-e/unet/vae-d/other`: CPU seconds inside the exemplar encoder, VAE encoder, UNet,
  VAE decoder, and everything else (pre/post-processing, scheduler), from forward hooks;
- `peak MiB`: peak RSS of the whole process (load + runs) minus RSS after the imports;
- `run MiB`: peak RSS during the run minus RSS just before it (activations, temporaries);
  the lines below split it by model (peak inside each, over the RSS on entry).
Ratios ours / diffusers below 1 mean ours is faster / smaller. The issue's targets: wall
<= 0.8, peak memory <= 0.6. `--ours-dtype bfloat16` loads ours in bfloat16 (diffusers stays
float32): not the same arithmetic, but what bfloat16 would buy on CPUs with AMX/AVX512-BF16.

Part 2: a 2048 x 2048 photo with a 128-px mask through region="auto" (crop around the mask,
edit at resolution 512, stitch back) vs a 512 x 512 photo with region="full": the same model
work, so the ratio shows the cost of the large photo (target: within 1.2). It runs
REGION_STEPS steps (fewer steps make the fixed overhead weigh more: a conservative ratio).

Time on this 2-core machine: about 3 minutes when idle, 5-8 when shared. Compare only ratios
measured in one run; wall times move with whatever else the machine runs.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import _common

PHASES = ("encoder", "vae_encode", "unet", "vae_decode")


def scene(size: int, seed: int = 0):
    """A smooth colour field with noise, so nothing is degenerate."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([x, y, (x + y) / 2], axis=-1) * 200 + 20
    return Image.fromarray(np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype("uint8"))


def box_mask(size: int, box: tuple[int, int, int, int]):
    from PIL import Image, ImageDraw

    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


def exemplar():
    return scene(300, seed=1).resize((300, 200))


class Meter:
    """Per-phase CPU seconds and extra peak RSS (forward hooks), and the whole run's peak RSS.

    VmHWM is reset at each phase boundary, so the overall peak is folded in before each reset.
    """

    def __init__(self, modules: dict[str, object]):
        self.cpu = dict.fromkeys(modules, 0.0)
        self.extra_mib = dict.fromkeys(modules, 0.0)
        self.peak_mib = 0.0
        self._start_rss = 0.0
        for name, module in modules.items():
            module.register_forward_pre_hook(lambda *_, name=name: self._enter(name))
            module.register_forward_hook(lambda *_, name=name: self._leave(name))

    def fold_and_reset(self) -> None:
        self.peak_mib = max(self.peak_mib, _common.status_mib("VmHWM"))
        _common.reset_peak_rss()

    def _enter(self, name: str) -> None:
        self.fold_and_reset()
        self._start_rss = _common.status_mib("VmRSS")
        self.cpu[name] -= time.process_time()

    def _leave(self, name: str) -> None:
        self.cpu[name] += time.process_time()
        extra = _common.status_mib("VmHWM") - self._start_rss
        self.extra_mib[name] = max(self.extra_mib[name], extra)
        self.fold_and_reset()


def ours_job(folder: Path, job: str, size: int, dtype):
    """(phase modules, run(steps)) for our pipeline."""
    from pbe_core.pipeline import PaintByExample

    pipe = PaintByExample.from_pretrained(folder, device="cpu", dtype=dtype)
    models = pipe.models
    modules = {
        "encoder": models.encoder,
        "vae_encode": models.vae.encoder,
        "unet": models.unet,
        "vae_decode": models.vae.decoder,
    }
    if job == "region-2048":
        # A 128-px box in a 2048-px photo: cropped with context, edited at 512, stitched back.
        image, mask, region = scene(2048), box_mask(2048, (1300, 700, 1427, 827)), "auto"
    else:
        box = (size * 3 // 8, size // 4, size * 5 // 8, size * 3 // 4)
        image, mask, region = scene(size), box_mask(size, box), "full"
    picture = exemplar()

    def run(count: int) -> None:
        pipe.run(
            image, mask, picture, steps=count, guidance=5.0, sampler="ddim", seed=0,
            region=region, resolution=512, feather=0 if region == "full" else 8,
            compat="diffusers",
        )

    return modules, run


def diffusers_job(folder: Path, size: int):
    import diffusers
    import torch
    from diffusers.pipelines.deprecated.paint_by_example import PaintByExampleImageEncoder
    from transformers import CLIPImageProcessor

    scheduler = diffusers.DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
        beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )
    pipe = diffusers.PaintByExamplePipeline(
        vae=diffusers.AutoencoderKL.from_pretrained(folder / "vae"),
        image_encoder=PaintByExampleImageEncoder.from_pretrained(folder / "image_encoder"),
        unet=diffusers.UNet2DConditionModel.from_pretrained(folder / "unet"),
        scheduler=scheduler,
        feature_extractor=CLIPImageProcessor.from_pretrained(folder / "feature_extractor"),
        safety_checker=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    modules = {
        "encoder": pipe.image_encoder,
        "vae_encode": pipe.vae.encoder,
        "unet": pipe.unet,
        "vae_decode": pipe.vae.decoder,
    }
    box = (size * 3 // 8, size // 4, size * 5 // 8, size * 3 // 4)
    image, mask, picture = scene(size), box_mask(size, box), exemplar()

    def run(count: int) -> None:
        pipe(
            image=image, mask_image=mask, example_image=picture, height=size, width=size,
            num_inference_steps=count, guidance_scale=5.0,
            generator=torch.Generator().manual_seed(0), output_type="np",
        )

    return modules, run


def touch_weights(modules: dict[str, object]) -> None:
    """Read every weight once, so that lazily mapped files are resident before the timing."""
    for module in modules.values():
        for tensor in module.state_dict().values():
            tensor.float().sum()


def child(job: str, folder: str, size: int, steps: int, options: dict) -> None:
    """Runs in a fresh process: imports, baseline, load, page the weights in, timed runs."""
    import gc

    import diffusers  # noqa: F401 - imported by every child so that baselines match
    import torch

    import pbe_core.pipeline  # noqa: F401

    if options["threads"]:
        torch.set_num_threads(options["threads"])
    torch.set_grad_enabled(False)
    gc.collect()
    baseline = _common.status_mib("VmRSS")
    started = time.perf_counter()
    if job == "diffusers":
        modules, run = diffusers_job(Path(folder), size)
    else:
        modules, run = ours_job(Path(folder), job, size, getattr(torch, options["ours_dtype"]))
    load_seconds = time.perf_counter() - started
    touch_weights(modules)
    overall_peak = _common.status_mib("VmHWM")  # load and page-in
    meter = Meter(modules)
    wall, cpu, system, faults, run_mib = [], [], [], [], []
    for _ in range(options["repeats"]):
        gc.collect()
        meter.fold_and_reset()
        before, meter.peak_mib = _common.status_mib("VmRSS"), 0.0
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu.append(-time.process_time())
        wall.append(-time.perf_counter())
        run(steps)
        wall[-1] += time.perf_counter()
        cpu[-1] += time.process_time()
        after = resource.getrusage(resource.RUSAGE_SELF)
        system.append(after.ru_stime - usage.ru_stime)
        faults.append(after.ru_minflt - usage.ru_minflt)
        meter.fold_and_reset()
        run_mib.append(meter.peak_mib - before)
        overall_peak = max(overall_peak, meter.peak_mib)
    best = wall.index(min(wall))
    phases = {name: seconds / len(wall) for name, seconds in meter.cpu.items()}
    phases["other"] = sum(cpu) / len(cpu) - sum(phases.values())
    _common.report({
        "load_s": load_seconds,
        "run_s": wall[best],
        "cpu_s": cpu[best],
        "sys_s": system[best],
        "faults": faults[best],
        "phases_cpu": phases,
        "phase_mib": meter.extra_mib,
        "peak_mib": overall_peak - baseline,
        "run_mib": run_mib[best],
        "threads": torch.get_num_threads(),
    })


def row(label: str, result: dict) -> str:
    phases = " ".join(f"{result['phases_cpu'][p]:6.1f}" for p in (*PHASES, "other"))
    return (
        f"{label:24} {result['run_s']:6.1f} {result['cpu_s']:6.1f} {result['sys_s']:5.1f} "
        f"{result['faults'] / 1000:8.0f} {phases} "
        f"{result['peak_mib']:8.0f} {result['run_mib']:7.0f} {result['load_s']:6.1f}"
    )


def phase_memory(label: str, result: dict) -> str:
    return f"  {label}: " + ", ".join(f"{p} {result['phase_mib'][p]:.0f}" for p in PHASES)


def ratios(first: dict, second: dict) -> str:
    def ratio(key: str) -> str:
        return f"{first[key] / second[key]:.3f}"

    unet = first["phases_cpu"]["unet"] / second["phases_cpu"]["unet"]
    return (
        f"wall {ratio('run_s')}, cpu {ratio('cpu_s')}, peak memory {ratio('peak_mib')}, "
        f"run memory {ratio('run_mib')}, unet cpu {unet:.3f}"
    )


HEADER = (
    f"{'':24} {'wall s':>6} {'cpu s':>6} {'sys s':>5} {'faults k':>8} {'enc':>6} {'vae-e':>6} {'unet':>6} {'vae-d':>6} "
    f"{'other':>6} {'peak MiB':>8} {'run MiB':>7} {'load s':>6}"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="/tmp/pbe-bench", help="cache of the random weights")
    parser.add_argument("--size", type=int, default=256, help="image side of part 1")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps of part 1")
    parser.add_argument("--region-steps", type=int, default=3, help="DDIM steps of part 2")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per process (best kept)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--ours-dtype", default="float32", choices=("float32", "bfloat16"),
        help="our weights' dtype (diffusers stays float32): bfloat16 shows what it would buy",
    )
    parser.add_argument("--skip-region", action="store_true", help="run part 1 only")
    options = parser.parse_args()
    folder = str(_common.ensure_weights(options.workdir) / "diffusers")
    child_options = json.dumps({
        "threads": options.threads, "repeats": options.repeats, "ours_dtype": options.ours_dtype,
    })

    def measure(job: str, size: int, steps: int) -> dict:
        return _common.run_child(
            [__file__, "--child", job, folder, str(size), str(steps), child_options]
        )

    print(
        f"part 1: {options.size}x{options.size}, DDIM {options.steps} steps, guidance 5, CPU; "
        f"ours {options.ours_dtype}, diffusers float32; phases in CPU seconds"
    )
    print(HEADER)
    ours = measure("ours", options.size, options.steps)
    print(row("ours", ours))
    theirs = measure("diffusers", options.size, options.steps)
    print(row("diffusers", theirs))
    print("extra peak MiB inside each phase:")
    print(phase_memory("ours", ours))
    print(phase_memory("diffusers", theirs))
    print(f"ratio ours/diffusers: {ratios(ours, theirs)}  [{ours['threads']} threads]")
    print("  targets: wall <= 0.8, peak memory <= 0.6")
    if options.skip_region:
        return

    print(
        f"part 2: ours, region='auto' on a 2048x2048 photo vs region='full' on 512x512, "
        f"{options.region_steps} steps"
    )
    print(HEADER)
    large = measure("region-2048", 512, options.region_steps)
    print(row("2048 photo, auto @512", large))
    small = measure("ours", 512, options.region_steps)
    print(row("512 photo, full", small))
    print(f"ratio 2048-auto/512-full: {ratios(large, small)}  (target: within 1.2)")
    overhead = large["phases_cpu"]["other"] - small["phases_cpu"]["other"]
    print(f"  CPU seconds outside the models, 2048 minus 512: {overhead:.2f}")


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6]))
    else:
        main()
