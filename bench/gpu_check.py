"""On a machine with a CUDA GPU: a 512 px, 50-step PLMS edit in fp16 and bf16, ours vs diffusers.

    .venv/bin/python bench/gpu_check.py [--workdir /tmp/pbe-bench] [--size 512] [--steps 50]

Same full-size random weights (bench/_common.py writes them once), same job (a box mask, one
exemplar, guidance 5, seed 0; ours with --compat diffusers semantics: region full, feather 0).
Each side runs in a fresh process: load to the GPU, one warm-up edit of 2 steps (kernel
selection, cuDNN autotuning), then the timed edit. Columns: load s, edit s (the timed edit,
synchronised), peak VRAM (torch.cuda.max_memory_allocated over load and edits) and the
ratios ours / diffusers. Without CUDA it says so and exits 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _common

DTYPES = ("float16", "bfloat16")


def child(side: str, folder: str, size: int, steps: int, dtype_name: str) -> None:
    import torch
    from pipeline_speed import box_mask, exemplar, scene

    dtype = getattr(torch, dtype_name)
    mask = box_mask(size, (size * 3 // 8, size // 4, size * 5 // 8, size * 3 // 4))
    image, example = scene(size), exemplar()
    started = time.perf_counter()
    if side == "ours":
        from pbe_core.pipeline import PaintByExample

        pipe = PaintByExample.from_pretrained(folder, device="cuda", dtype=dtype)

        def edit(count: int) -> None:
            pipe.run(image, mask, example, steps=count, guidance=5.0, sampler="plms", seed=0,
                     region="full", feather=0, compat="diffusers")
    else:
        import diffusers
        from diffusers.pipelines.deprecated.paint_by_example import PaintByExampleImageEncoder
        from transformers import CLIPImageProcessor

        load = dict(torch_dtype=dtype)
        pipe = diffusers.PaintByExamplePipeline(
            vae=diffusers.AutoencoderKL.from_pretrained(f"{folder}/vae", **load),
            image_encoder=PaintByExampleImageEncoder.from_pretrained(f"{folder}/image_encoder", **load),
            unet=diffusers.UNet2DConditionModel.from_pretrained(f"{folder}/unet", **load),
            scheduler=diffusers.PNDMScheduler(
                num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                beta_schedule="scaled_linear", steps_offset=1, skip_prk_steps=True,
            ),
            feature_extractor=CLIPImageProcessor.from_pretrained(f"{folder}/feature_extractor"),
            safety_checker=None, requires_safety_checker=False,
        ).to("cuda")
        pipe.set_progress_bar_config(disable=True)

        def edit(count: int) -> None:
            pipe(image=image, mask_image=mask, example_image=example, height=size, width=size,
                 num_inference_steps=count, guidance_scale=5.0, generator=torch.Generator().manual_seed(0))

    torch.cuda.synchronize()
    loaded = time.perf_counter() - started
    edit(2)
    torch.cuda.synchronize()
    started = time.perf_counter()
    edit(steps)
    torch.cuda.synchronize()
    _common.report({
        "load_s": loaded, "edit_s": time.perf_counter() - started,
        "vram_mib": torch.cuda.max_memory_allocated() / _common.MIB, "gpu": torch.cuda.get_device_name(),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/pbe-bench")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50)
    options = parser.parse_args()
    probe = _common.run_child(["-c", "import torch, _common; _common.report({'cuda': torch.cuda.is_available()})"],
                              extra_path=str(Path(__file__).parent))
    if not probe["cuda"]:
        print("no CUDA GPU here: this check needs one (torch.cuda.is_available() is False)", file=sys.stderr)
        sys.exit(2)
    folder = str(_common.ensure_weights(options.workdir) / "diffusers")
    print(f"{options.size}x{options.size}, PLMS {options.steps} steps, guidance 5")
    print(f"{'':16} {'load s':>7} {'edit s':>7} {'peak VRAM MiB':>14}")
    for dtype in DTYPES:
        found = {}
        for side in ("diffusers", "ours"):
            found[side] = _common.run_child([__file__, "--child", side, folder, str(options.size),
                                             str(options.steps), dtype])
            run = found[side]
            print(f"{dtype + ' ' + side:16} {run['load_s']:7.1f} {run['edit_s']:7.1f} {run['vram_mib']:14.0f}", flush=True)
        ours, theirs = found["ours"], found["diffusers"]
        print(f"  {dtype} ours / diffusers: edit time {ours['edit_s'] / theirs['edit_s']:.2f}, "
              f"peak VRAM {ours['vram_mib'] / theirs['vram_mib']:.2f} ({ours['gpu']})")


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    else:
        main()
