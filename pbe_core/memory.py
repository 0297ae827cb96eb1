"""Will an edit fit? A rough, deliberately pessimistic estimate, checked before any work starts.

The weights are already loaded when this runs, so only the working memory is estimated, from
the working size (h, w), the batch and the models' configs, in bytes of the compute dtype:

- UNet, run on 2 x batch (both halves of classifier-free guidance): the skip connections it keeps
  ((res blocks + 1) per level, channels x tokens) plus the widest level's transformer working set
  (about 12 x channels x tokens: q, k, v, output and GEGLU's 8x-wide hidden state). Attention runs
  through `scaled_dot_product_attention`, whose fused kernels need no tokens x tokens matrix.
- VAE, on the batch at full working size: the upsampled second level (base x mult[1] channels)
  and three full-resolution activations of the first level (base x mult[0] channels).

estimate = 2 x max(UNet, VAE): the factor 2 covers what the sum leaves out
(allocator slack, convolution workspaces, temporaries). On a CPU it is compared with
/proc/meminfo's MemAvailable (or sysconf's available pages), on CUDA with the device's free memory
plus what torch holds cached; where neither is known, nothing is refused.
"""

from __future__ import annotations

import os

import torch

GIB = 1024**3


def edit_bytes(models, work_hw: tuple[int, int], batch: int, dtype: torch.dtype) -> int:
    """Working memory of one edit at working size `work_hw`, by the module docstring's formula."""
    unet, vae = models.unet.config, models.vae.config
    size = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    height, width = work_hw
    tokens = (height // 8) * (width // 8)
    skips, widest = 0, 0
    for level, mult in enumerate(unet.channel_mult):
        channels, level_tokens = unet.model_channels * mult, tokens / 4**level
        skips += (unet.num_res_blocks + 1) * channels * level_tokens
        if unet.attention_levels[level]:
            widest = max(widest, 12 * channels * level_tokens)
    unet_bytes = 2 * batch * (skips + widest) * size
    mults = vae.channel_mult
    second = mults[1] if len(mults) > 1 else mults[0]
    vae_bytes = batch * height * width * vae.base_channels * (second + 3 * mults[0]) * size
    return int(2 * max(unet_bytes, vae_bytes))


def available_bytes(device: torch.device) -> int | None:
    """Memory an edit may still use on `device`; None where it cannot be told."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class InsufficientMemory(MemoryError):
    """The edit's estimate exceeds the memory available; the message says the way out."""


def check_fits(models, work_hw, batch: int, dtype: torch.dtype, device: torch.device,
               available: int | None = None) -> None:
    """Raise InsufficientMemory when the estimate exceeds `available` (default: measured now)."""
    needed = edit_bytes(models, work_hw, batch, dtype)
    available = available_bytes(device) if available is None else available
    if available is None or needed <= available:
        return
    ways = ["region auto with a lower resolution (512 is what the model was trained at)"]
    if batch > 1:
        ways.append("a smaller batch size")
    if dtype == torch.float32:
        ways.append("dtype bf16" if device.type == "cpu" else "dtype fp16")
    raise InsufficientMemory(
        f"this edit needs about {needed / GIB:.1f} GiB of working memory ({work_hw[1]}x{work_hw[0]} "
        f"working size, batch {batch}, {str(dtype).removeprefix('torch.')}) but {device.type} has "
        f"{available / GIB:.1f} GiB available; use {', or '.join(ways)}"
    )
