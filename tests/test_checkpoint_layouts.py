"""Variants of each layout that users have: legacy pickles, flat or nested state dicts, EMA
weights, fp16 and `.bin` diffusers folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pbe_core import keymaps
from pbe_core.checkpoint import load_models, read_file, read_weights, weights_of
from pbe_core.testing import tiny_models


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key].float(), b[key].float()), key


def test_legacy_pickle_and_flat_state_dict(tiny, tmp_path):
    weights = weights_of(tiny)
    flat = keymaps.join_original(weights.unet, weights.vae, weights.encoder)
    legacy = tmp_path / "legacy.ckpt"
    torch.save({"state_dict": flat, "global_step": 1234}, legacy, _use_new_zipfile_serialization=False)
    plain = tmp_path / "flat.pt"
    torch.save(flat, plain)
    for path in (legacy, plain):
        read = read_weights(path)
        assert_same(read.unet, weights.unet)
        assert_same(read.encoder, weights.encoder)


def test_ema_weights_are_used_when_asked(tiny, tmp_path):
    weights = weights_of(tiny)
    other_unet = tiny_models(seed=1).unet.state_dict()
    state = keymaps.join_original(weights.unet, weights.vae, weights.encoder)
    for key, value in other_unet.items():
        state["model_ema." + ("diffusion_model." + key).replace(".", "")] = value
    state["model_ema.num_updates"] = torch.tensor(3)
    path = tmp_path / "ema.ckpt"
    torch.save({"state_dict": state}, path)
    assert_same(read_weights(path).unet, weights.unet)
    assert_same(read_weights(path, prefer_ema=True).unet, other_unet)


def test_fp16_and_bin_diffusers_folders(tiny, tiny_paths, tmp_path):
    fp16 = tmp_path / "fp16"
    shutil.copytree(tiny_paths["diffusers"], fp16)
    for file in fp16.glob("*/*.safetensors"):
        half = {k: v.half() for k, v in load_file(file).items()}
        save_file(half, file.with_name(file.stem + ".fp16.safetensors"))
        file.unlink()
    models = load_models(fp16, dtype=torch.float32)
    reference = tiny.unet.state_dict()
    for key, value in models.unet.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, reference[key].half().float()), key

    bins = tmp_path / "bins"
    shutil.copytree(tiny_paths["diffusers"], bins)
    for file in bins.glob("*/*.safetensors"):
        name = "pytorch_model.bin" if file.parent.name == "image_encoder" else "diffusion_pytorch_model.bin"
        torch.save(load_file(file), file.with_name(name))
        file.unlink()
    assert_same(read_weights(bins).encoder, weights_of(tiny).encoder)


def test_loading_keeps_the_file_dtype_until_asked(tiny_paths):
    models = load_models(tiny_paths["safetensors"], dtype=torch.bfloat16)
    assert {p.dtype for p in models.unet.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in models.encoder.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in models.vae.parameters())


def test_cast_while_reading_equals_cast_after(tiny_paths):
    for layout in ("safetensors", "diffusers", "ckpt"):
        cast_on_read = read_weights(tiny_paths[layout], dtype=torch.bfloat16)
        plain = read_weights(tiny_paths[layout])
        for part in ("unet", "vae", "encoder"):
            a, b = getattr(cast_on_read, part), getattr(plain, part)
            assert a.keys() == b.keys()
            assert all(torch.equal(a[k], b[k].to(torch.bfloat16)) for k in a), (layout, part)


def _mapped_from(path) -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of `path` (Linux /proc/self/maps)."""
    ranges = []
    for line in open("/proc/self/maps"):
        fields = line.split()
        if len(fields) >= 6 and fields[5] == str(path):
            low, high = (int(part, 16) for part in fields[0].split("-"))
            ranges.append((low, high))
    return ranges


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux /proc/self/maps")
def test_safetensors_in_the_asked_dtype_are_mapped_not_copied(tiny_paths, tmp_path):
    path = tmp_path / "model.safetensors"
    shutil.copy(tiny_paths["safetensors"], path)
    before = path.read_bytes()
    state = read_file(path, dtype=torch.float32)
    ranges = _mapped_from(path)
    big = [t for t in state.values() if t.numel() > 1000]
    assert big and all(any(low <= t.data_ptr() < high for low, high in ranges) for t in big)
    for tensor in state.values():
        tensor.add_(1.0)  # copy-on-write: a model changing its weights never changes the file
    assert path.read_bytes() == before
    cast = read_file(path, dtype=torch.bfloat16)
    assert not any(any(low <= t.data_ptr() < high for low, high in _mapped_from(path)) for t in cast.values())
    del state, big, tensor
    assert not _mapped_from(path)  # mappings go with their tensors


def test_select_reads_only_the_chosen_keys(tiny_paths):
    for layout in ("safetensors", "ckpt"):
        state = read_file(tiny_paths[layout], dtype=torch.bfloat16, select=lambda key: key.startswith("first_stage_model."))
        assert state and all(key.startswith("first_stage_model.") for key in state)
        assert {t.dtype for t in state.values()} == {torch.bfloat16}
