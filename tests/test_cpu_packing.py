"""The UNet with oneDNN-packed weights gives what the plain one gives, and refuses to be moved."""

from __future__ import annotations

import copy
import weakref

import pytest
import torch
from torch import nn

from pbe_core.models import cpu_packing


def inputs(dtype: torch.dtype, hw: tuple[int, int] = (16, 24)):
    generator = torch.Generator().manual_seed(1)
    latent = torch.randn(2, 9, *hw, generator=generator).to(dtype)
    context = torch.randn(2, 1, 32, generator=generator).to(dtype)
    return latent, torch.tensor([981.0, 1.0]), context


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.fixture
def packable():
    if not cpu_packing.supported(torch.float32):
        pytest.skip("this torch build has no oneDNN packing ops")


@torch.no_grad()
@pytest.mark.parametrize("hw", [(16, 24), (13, 19)])  # the second: sides not multiples of 2^levels
def test_packed_unet_gives_the_plain_unets_output(tiny, packable, hw):
    unet = copy.deepcopy(tiny.unet)
    want = unet(*inputs(torch.float32, hw))
    cpu_packing.pack(unet)
    plain = [m for m in unet.modules() if type(m) in (nn.Conv2d, nn.Linear)]
    assert not plain, f"{len(plain)} layers left unpacked"
    got = unet(*inputs(torch.float32, hw))
    assert want.abs().mean() > 0.1  # not a degenerate comparison
    assert relative(got, want) < 1e-5


@torch.no_grad()
def test_layers_pack_at_their_first_call_and_still_serve_another_size(tiny, packable):
    unet = copy.deepcopy(tiny.unet)
    want = unet(*inputs(torch.float32, (8, 8)))
    cpu_packing.pack(unet)
    layers = {name: m for name, m in unet.named_modules() if isinstance(m, cpu_packing._Packed)}
    assert layers and all(m.packed is None for m in layers.values())  # nothing reordered yet
    # one channels-last scratch buffer for all convolutions, gone once the last one has packed
    scratches = {id(m.scratch) for m in layers.values() if isinstance(m, cpu_packing.PackedConv2d)}
    assert len(scratches) == 1
    scratch = weakref.ref(next(m.scratch for m in layers.values() if isinstance(m, cpu_packing.PackedConv2d)))
    unet(*inputs(torch.float32, (16, 24)))
    assert scratch() is None
    # with one context token, the cross-attention's queries and keys are never computed
    unused = {name for name in layers if ".attn2.to_q" in name or ".attn2.to_k" in name}
    assert unused and all(layers[name].packed is None for name in unused)
    assert all(m.packed is not None and m.dense is None for n, m in layers.items() if n not in unused)
    assert relative(unet(*inputs(torch.float32, (8, 8))), want) < 1e-5


@torch.no_grad()
def test_packed_bf16_is_as_close_to_fp32_as_plain_bf16(tiny, packable):
    if not cpu_packing.supported(torch.bfloat16):
        pytest.skip("no native bf16 in oneDNN on this CPU")
    reference = tiny.unet(*inputs(torch.float32))
    unet = copy.deepcopy(tiny.unet).to(torch.bfloat16)
    plain = unet(*inputs(torch.bfloat16))
    got = cpu_packing.pack(unet)(*inputs(torch.bfloat16))
    assert cpu_packing.is_packed(unet)
    assert relative(got, reference) < 2 * relative(plain, reference) + 1e-3


@torch.no_grad()
def test_pointwise_and_strided_convolutions_in_either_memory_format(packable):
    generator = torch.Generator().manual_seed(2)
    layers = nn.Sequential(nn.Conv2d(6, 8, 1), nn.Conv2d(8, 8, 3, stride=2, padding=1)).eval()
    x = torch.randn(2, 6, 9, 11, generator=generator)
    want = layers(x)
    cpu_packing.pack(layers)
    assert [type(m).__name__ for m in layers] == ["PackedPointwiseConv2d", "PackedConv2d"]
    for source in (x, x.to(memory_format=torch.channels_last)):
        assert relative(layers(source), want) < 1e-5


def test_a_packed_model_cannot_be_moved_or_cast_until_released(tiny, packable):
    unet = cpu_packing.pack(copy.deepcopy(tiny.unet))
    with pytest.raises(TypeError, match="packed for CPU inference"):
        unet.to(torch.bfloat16)
    cpu_packing.release(unet)
    unet.to("meta")
    assert all(p.is_meta for p in unet.parameters())


def test_what_cannot_be_packed_stays_as_it_was(tiny):
    unet = copy.deepcopy(tiny.unet).to(torch.float64)
    assert not cpu_packing.is_packed(cpu_packing.pack(unet))
    on_meta = copy.deepcopy(tiny.unet).to("meta")
    assert not cpu_packing.is_packed(cpu_packing.pack(on_meta))
