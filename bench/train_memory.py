"""One LoRA training step of the full-size architecture at 512 px on this CPU: time, peak RSS,
and from them the peak memory the LoRA mode needs on a GPU.

    .venv/bin/python bench/train_memory.py [--rank 16] [--resolution 512] [--threads N]

Builds the full-size models (SD 1.x UNet, SD VAE, CLIP ViT-L/14 + mapper: 1.31 B parameters)
with random weights, as `pbe_core train --lora RANK --checkpointing --dtype bf16 --batch-size
1` trains them: weights float32, bf16 autocast, gradient checkpointing of the UNet's blocks,
AdamW over the adapters, mapper, final LN, projection and learned vector. Times the first
optimizer step (data, VAE and CLIP without gradients, UNet forward, recomputation, backward,
AdamW) and measures RSS before it and the peak during it. Uses all the CPU for a minute or two
and about 6 GB of memory beyond the weights: run it once.

The GPU estimate adds up: weights (as the CLI holds them, fp32, and as they could be held,
frozen parts in bf16), the trained tensors' gradients and AdamW moments (fp32), the
activations of the step (measured here: the RSS growth during the step, minus the optimizer's
own tensors), plus a CUDA context and allocator allowance. CPU activations are an upper bound
for a GPU: the CPU's attention materialises the (4096 x 4096) score matrix per head at 64 x 64
latents, which flash/memory-efficient attention on a GPU does not.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GIB = 1024**3
CUDA_CONTEXT_GIB = 0.8  # context + cuBLAS/cuDNN workspaces, typical for a recent PyTorch
ALLOCATOR_SLACK = 1.15  # caching-allocator fragmentation


def current_rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from pbe_core.checkpoint import Models
    from pbe_core.models.configs import EncoderConfig, UNetConfig, VAEConfig
    from pbe_core.models.exemplar_encoder import ExemplarEncoder
    from pbe_core.models.unet import UNet
    from pbe_core.models.vae import AutoencoderKL
    from pbe_core.testing import randomize
    from pbe_core.train import TrainConfig, Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    with torch.device("meta"):
        parts = UNet(UNetConfig()), AutoencoderKL(VAEConfig()), ExemplarEncoder(EncoderConfig())
    for model in parts:
        randomize(model.to_empty(device="cpu"), generator)
    for module in parts[2].modules():  # to_empty left CLIP's position ids uninitialised
        ids = getattr(module, "position_ids", None)
        if isinstance(ids, torch.Tensor):
            ids.copy_(torch.arange(ids.shape[-1]).expand_as(ids))
    models = Models(*parts, layout="original")
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (640, 768, 3), dtype=np.uint8))
    source = [(picture, (200, 150, 460, 420))] * 4
    config = TrainConfig(steps=1, resolution=args.resolution, batch_size=1, lora_rank=args.rank,
                         precision="bf16", checkpointing=True, warmup_steps=0)
    trainer = Trainer(models, source, config)
    counts = {
        "unet": sum(p.numel() for p in models.unet.parameters()),
        "vae": sum(p.numel() for p in models.vae.parameters()),
        "clip": sum(p.numel() for p in models.encoder.transformer.parameters()),
    }
    counts["encoder parts"] = sum(p.numel() for p in models.encoder.parameters()) - counts["clip"]
    lora = sum(p.numel() for p in trainer.adapters.parameters())
    trained = sum(p.numel() for p in trainer.parameters.values())
    total = sum(counts.values())

    before = current_rss()
    started = time.perf_counter()
    result = trainer.run()
    seconds = time.perf_counter() - started
    peak = peak_rss()
    optimizer_bytes = sum(
        t.numel() * t.element_size()
        for state in trainer.optimizer.state.values() for t in state.values() if torch.is_tensor(t)
    )
    activations = max(peak - before - optimizer_bytes, 0)

    print(f"full-size Paint by Example, LoRA rank {args.rank} on the UNet's attention, "
          f"{args.resolution} px, batch 1, bf16 autocast, gradient checkpointing, "
          f"{torch.get_num_threads()} threads; loss {result.losses[0]:.4f}")
    print(f"  parameters: {total / 1e6:.0f} M (UNet {counts['unet'] / 1e6:.0f} M, VAE "
          f"{counts['vae'] / 1e6:.0f} M, CLIP {counts['clip'] / 1e6:.0f} M, mapper+LN+proj+vector "
          f"{counts['encoder parts'] / 1e6:.1f} M); LoRA {lora / 1e6:.2f} M; trained {trained / 1e6:.1f} M")
    print(f"  one step on this CPU: {seconds:.1f} s; RSS before {before / GIB:.2f} GiB, peak "
          f"{peak / GIB:.2f} GiB, growth {(peak - before) / GIB:.2f} GiB (AdamW moments "
          f"{optimizer_bytes / GIB:.2f} GiB, the rest activations and temporaries "
          f"{activations / GIB:.2f} GiB). Timings are noisy: the CPU is shared.")

    frozen = total - counts["encoder parts"]
    rows = {
        "weights, fp32 as the CLI holds them": 4 * (total + lora),
        "weights, frozen parts bf16": 2 * frozen + 4 * (counts["encoder parts"] + lora),
    }
    trained_states = 4 * trained + 8 * trained  # gradients + AdamW exp_avg, exp_avg_sq (fp32)
    print(f"  GPU estimate at {args.resolution} px, bf16/fp16 autocast, batch 1:")
    for label, weight_bytes in rows.items():
        subtotal = weight_bytes + trained_states + activations
        estimate = subtotal * ALLOCATOR_SLACK + CUDA_CONTEXT_GIB * GIB
        print(f"    {label}: weights {weight_bytes / GIB:.2f} + gradients and AdamW moments "
              f"{trained_states / GIB:.2f} (12 B x {trained / 1e6:.1f} M trained) "
              f"+ activations {activations / GIB:.2f} = {subtotal / GIB:.2f} GiB; x "
              f"{ALLOCATOR_SLACK} allocator slack + {CUDA_CONTEXT_GIB} GiB CUDA context = "
              f"{estimate / GIB:.1f} GiB ({'fits' if estimate < 24 * 0.93 * GIB else 'does not fit'} "
              f"a 24 GB card)")


if __name__ == "__main__":
    main()
