"""One guided UNet step of the full-size model against this CPU's own matmul rate.

    .venv/bin/python bench/unet_step.py [--size 256] [--repeats 3] [--dtypes fp32,bf16]
        [--variants plain,channels_last]

The full-size UNet (SD 1.x, 860 M parameters, random weights, built in this process) runs one
classifier-free-guided step: batch 2 (conditional + unconditional) at SIZE/8 latents. Its
FLOPs are counted by torch's FlopCounterMode on that same call; the step's rate (GFLOP/s) is
compared with a 4096-square matmul measured here, in the same dtype, with the same threads.
Issue targets: fp32 at 75% of the matmul rate or more, bf16 at 40% or more. Variants:
`packed` (what a one-shot CPU edit runs: `pbe_core.models.cpu_packing`), `plain` (eager, what a
long-lived pipeline runs), `channels_last` (eager, weights and input in NHWC memory format).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from pbe_core.models import cpu_packing
from pbe_core.models.configs import UNetConfig
from pbe_core.models.unet import UNet
from pbe_core.testing import randomize

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def best_seconds(call, repeats: int) -> float:
    call()  # first call: kernel selection, allocations
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def matmul_gflops(dtype: torch.dtype, repeats: int) -> float:
    a, b = torch.randn(4096, 4096, dtype=dtype), torch.randn(4096, 4096, dtype=dtype)
    return 2 * 4096**3 / best_seconds(lambda: a @ b, repeats) / 1e9


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--variants", default="packed,plain,channels_last")
    options = parser.parse_args()
    with torch.device("meta"):
        unet = UNet(UNetConfig())
    unet = randomize(unet.to_empty(device="cpu"), torch.Generator().manual_seed(0)).eval()
    side = options.size // 8
    print(f"UNet step: batch 2 (guided), {side}x{side} latents, {torch.get_num_threads()} threads")
    print(f"{'':22} {'s/step':>7} {'GFLOP/s':>8} {'matmul GFLOP/s':>15} {'of matmul':>10}")
    for name in options.dtypes.split(","):
        dtype = DTYPES[name]
        unet.to(dtype)
        x = torch.randn(2, 9, side, side, dtype=dtype)
        t = torch.tensor([500, 500])
        context = torch.randn(2, 1, 768, dtype=dtype)
        with FlopCounterMode(display=False) as counter:
            unet(x, t, context)
        flops = counter.get_total_flops()
        peak = matmul_gflops(dtype, options.repeats)
        for variant in options.variants.split(","):
            memory_format = torch.channels_last if variant == "channels_last" else torch.contiguous_format
            unet.to(memory_format=memory_format)
            model = cpu_packing.pack(copy.deepcopy(unet)) if variant == "packed" else unet
            source = x.to(memory_format=memory_format)
            seconds = best_seconds(lambda m=model, s=source, t=t, c=context: m(s, t, c), options.repeats)
            del model
            rate = flops / seconds / 1e9
            print(f"{name + ' ' + variant:22} {seconds:7.2f} {rate:8.0f} {peak:15.0f} {rate / peak:10.0%}", flush=True)
        unet.to(memory_format=torch.contiguous_format)
    print(f"(one step: {flops / 1e9:.0f} GFLOP)")


if __name__ == "__main__":
    main()
