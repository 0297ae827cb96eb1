"""CPU inference with convolution and linear weights laid out once for oneDNN, not at every call.

Eager PyTorch reorders a convolution's weight into oneDNN's blocked layout on every call (for
the UNet's deepest 3x3 convolutions, 59 MB each in fp32, that is most of the call at 256 px),
and its fp32 linear layers run MKL's sgemm, which takes a slow path on AMD processors. The
modules here hold the weights already reordered and call the oneDNN kernels that
`torch.compile` uses with `freezing=True` (torch.ops.mkldnn), without compiling anything.

Inference only, for a model used once and then dropped (the CLI's one-shot edit): `pack`
replaces a model's Conv2d and Linear layers in place, so the dense weights go as the packed
ones come; a packed model cannot be trained, moved or cast, only `release`d. Where the oneDNN
ops or the dtype are not supported, `pack` leaves the model as it is.

Each weight is reordered at its layer's first call, for that call's input size: oneDNN picks
the blocked layout by the input's size, and a convolution's layout picked without it can run
several times slower than eager on AVX2 CPUs (320 channels at 32x32: 50 ms against eager's 23,
and 19 with the size). The sizes of a one-shot edit's steps never change; another size still
gives the right answer, at whatever speed that layout allows. A layer never called (the
cross-attention's queries and keys, with one context token) is never reordered nor paged in.
"""

from __future__ import annotations

import torch
from torch import nn

DTYPES = (torch.float32, torch.bfloat16)


def supported(dtype: torch.dtype) -> bool:
    """Whether this torch build has the oneDNN ops, and native kernels for `dtype`."""
    mkldnn = torch.ops.mkldnn
    names = ("_reorder_convolution_weight", "_convolution_pointwise",
             "_reorder_linear_weight", "_linear_pointwise")
    try:
        if not torch.backends.mkldnn.is_available() or not all(hasattr(mkldnn, n) for n in names):
            return False
        return dtype == torch.float32 or (
            dtype == torch.bfloat16 and bool(mkldnn._is_mkldnn_bf16_supported())
        )
    except (AttributeError, RuntimeError):
        return False


class _Packed(nn.Module):
    """A layer whose weight becomes an opaque oneDNN tensor at its first call (a plain
    attribute: no parameter can hold one, and it must never reach a state dict). Until then it
    holds the dense weight, untouched: a layer never called is never reordered nor paged in."""

    dense: torch.Tensor | None = None
    packed: torch.Tensor | None = None
    released = False

    def _reorder(self, dense: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def weight_for(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is None:
            if self.released:
                raise RuntimeError("this packed model was released: load the model again")
            self.packed, self.dense = self._reorder(self.dense, x), None
        return self.packed

    def _apply(self, fn, recurse=True):
        if not self.released:
            raise TypeError(
                "this model's weights are packed for CPU inference (pbe_core.models.cpu_packing); "
                "it cannot be moved or cast: load the model again instead"
            )
        return super()._apply(fn, recurse)


class ChannelsLastScratch:
    """One buffer for the channels-last copy of each convolution weight that oneDNN's reorder
    takes as its source (given an input size, it makes that copy itself, in fresh memory). Shared
    by the convolutions of one model, so the copies fault their pages in once, not once per
    layer: on a VM each 4 KiB page fault costs microseconds, and fresh copies took half of the
    packing's time. It shrinks to what the convolutions still to pack need, then goes."""

    def __init__(self, sizes: list[int], dtype: torch.dtype):
        self.waiting, self.dtype = sorted(sizes), dtype  # element counts still to copy
        self.buffer: torch.Tensor | None = None

    def channels_last(self, weight: torch.Tensor) -> torch.Tensor:
        if self.buffer is None:
            self.buffer = torch.empty(self.waiting[-1], dtype=self.dtype)
        out_channels, channels, height, width = weight.shape
        strides = (channels * height * width, 1, width * channels, channels)
        return self.buffer[: weight.numel()].as_strided(weight.shape, strides).copy_(weight)

    def done(self, weight: torch.Tensor) -> None:
        self.waiting.remove(weight.numel())
        if not self.waiting or self.waiting[-1] < self.buffer.numel():
            self.buffer = None


class PackedConv2d(_Packed):
    def __init__(self, conv: nn.Conv2d, scratch: ChannelsLastScratch | None = None):
        super().__init__()
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.dense = conv.weight.detach()
        self.scratch = scratch or ChannelsLastScratch([self.dense.numel()], self.dense.dtype)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), False)

    def _reorder(self, dense: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        packed = torch.ops.mkldnn._reorder_convolution_weight(
            self.scratch.channels_last(dense), self.padding, self.stride, self.dilation,
            self.groups, list(x.shape),
        )
        self.scratch.done(dense)
        self.scratch = None
        return packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # oneDNN answers in channels-last; the elementwise layers after it take either.
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.weight_for(x), self.bias, self.padding, self.stride, self.dilation,
            self.groups, "none", [], "",
        )


class PackedLinear(_Packed):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.dense = linear.weight.detach()
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), False)

    def _reorder(self, dense: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_linear_weight(dense, x.numel() // x.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight_for(x), self.bias, "none", [], "")


class PackedPointwiseConv2d(PackedLinear):
    """A 1x1 convolution as a linear layer over the channels of a channels-last input: oneDNN's
    packed 1x1 convolution is slow in bf16 (58 ms where this takes 0.5, 1280 channels, 8x8)."""

    def __init__(self, conv: nn.Conv2d):
        linear = nn.Linear(conv.in_channels, conv.out_channels, conv.bias is not None, "meta")
        linear.weight = nn.Parameter(conv.weight.detach()[:, :, 0, 0], False)
        linear.bias = conv.bias
        super().__init__(linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
        return super().forward(x).permute(0, 3, 1, 2)


def _pointwise(conv: nn.Conv2d) -> bool:
    return conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0)


def _packed(module: nn.Module, scratch: ChannelsLastScratch | None = None) -> nn.Module:
    if isinstance(module, nn.Linear):
        return PackedLinear(module)
    if _pointwise(module):
        return PackedPointwiseConv2d(module)
    return PackedConv2d(module, scratch)


def _packable(module: nn.Module, dtype: torch.dtype) -> bool:
    weight = getattr(module, "weight", None)
    if type(module) is nn.Conv2d:
        ok = module.padding_mode == "zeros" and isinstance(module.padding, tuple) and module.groups == 1
    else:
        ok = type(module) is nn.Linear
    return ok and weight is not None and weight.device.type == "cpu" and weight.dtype == dtype


def _agrees(layer: nn.Module, packed: nn.Module, dtype: torch.dtype) -> bool:
    """A first call on a small input against the plain layer: guards against a build whose
    oneDNN ops misbehave (then the model stays unpacked)."""
    generator = torch.Generator().manual_seed(0)
    if isinstance(layer, nn.Conv2d):
        x = torch.randn(1, layer.in_channels, 12, 12, generator=generator).to(dtype)
    else:
        x = torch.randn(3, layer.in_features, generator=generator).to(dtype)
    with torch.no_grad():
        want, got = layer(x).float(), packed(x).float()
    tolerance = 1e-4 if dtype == torch.float32 else 3e-2
    return got.shape == want.shape and bool(
        (got - want).abs().max() <= tolerance * (1 + want.abs().max())
    )


def pack(model: nn.Module) -> nn.Module:
    """Replace `model`'s Conv2d and Linear layers by packed ones, in place (see the module doc)."""
    first = next(model.parameters(), None)
    if first is None or first.device.type != "cpu" or first.dtype not in DTYPES:
        return model
    dtype = first.dtype
    if not supported(dtype):
        return model
    sizes = [m.weight.numel() for m in model.modules()
             if isinstance(m, nn.Conv2d) and _packable(m, dtype) and not _pointwise(m)]
    scratch = ChannelsLastScratch(sizes, dtype)
    checked = False
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not _packable(child, dtype):
                continue
            if not checked:  # on a copy: a layer packs for the size of its first input
                if not _agrees(child, _packed(child), dtype):
                    return model
                checked = True
            setattr(parent, name, _packed(child, scratch))
    return model


def release(model: nn.Module) -> None:
    """Drop the packed weights (the model cannot run again)."""
    for module in model.modules():
        if isinstance(module, _Packed):
            module.packed, module.dense, module.released = None, None, True
            if isinstance(module, PackedConv2d):  # never called: it still holds the scratch
                module.scratch = None


def is_packed(model: nn.Module) -> bool:
    return any(isinstance(m, _Packed) for m in model.modules())

