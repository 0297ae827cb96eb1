"""Files that are not Paint by Example weights fail with a clear CheckpointError, never deeper."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pbe_core.checkpoint import CheckpointError, load_models, read_weights


def test_text_to_image_sd_checkpoint_is_named(tmp_path):
    path = tmp_path / "sd15.safetensors"
    save_file(
        {
            "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(32, 4, 3, 3),
            "first_stage_model.encoder.conv_in.weight": torch.zeros(32, 3, 3, 3),
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(10, 8),
        },
        path,
    )
    with pytest.raises(CheckpointError, match="text encoder") as error:
        read_weights(path)
    assert "learnable_vector" in str(error.value) and str(path) in str(error.value)


def test_plain_clip_is_named(tmp_path):
    path = tmp_path / "clip.safetensors"
    save_file({"vision_model.embeddings.class_embedding": torch.zeros(8)}, path)
    with pytest.raises(CheckpointError, match="plain CLIP vision model"):
        read_weights(path)


def test_random_safetensors_lists_what_is_missing(tmp_path):
    path = tmp_path / "random.safetensors"
    save_file({"foo": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="Missing: UNet .*VAE .*mapper"):
        read_weights(path)


@pytest.mark.parametrize("layout", ["ckpt", "safetensors"])
def test_truncated_file_says_so_with_its_path(tiny_paths, tmp_path, layout):
    source = tiny_paths[layout]
    broken = tmp_path / source.name
    data = source.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted") as error:
        read_weights(broken)
    assert str(broken) in str(error.value)


class _Payload:
    """Unpickling this would create a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("container", ["torch-zip", "plain-pickle"])
def test_pickle_with_code_is_refused_and_never_runs(tmp_path, container):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.ckpt"
    payload = {"state_dict": {"weight": torch.zeros(2)}, "extra": _Payload(marker)}
    if container == "torch-zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError, match="refused"):
        read_weights(path)
    assert not marker.exists()


def test_unknown_file_lists_supported_layouts(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="diffusers folder"):
        read_weights(path)


def test_folder_without_unet_lists_supported_layouts(tmp_path):
    with pytest.raises(CheckpointError, match="not a diffusers model folder"):
        read_weights(tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        read_weights(tmp_path / "absent.ckpt")


def test_diffusers_folder_missing_a_component(tiny_paths, tmp_path):
    import shutil

    folder = tmp_path / "partial"
    shutil.copytree(tiny_paths["diffusers"], folder)
    shutil.rmtree(folder / "image_encoder")
    with pytest.raises(CheckpointError, match="image_encoder/"):
        read_weights(folder)


def test_unet_with_other_input_channels_is_refused(tiny, tmp_path):
    from pbe_core.checkpoint import save_single_file, weights_of

    weights = weights_of(tiny)
    weights.unet = dict(weights.unet)
    weights.unet["input_blocks.0.0.weight"] = weights.unet["input_blocks.0.0.weight"][:, :4].clone()
    path = save_single_file(weights, tmp_path / "four.safetensors")
    with pytest.raises(CheckpointError, match="4 input channels"):
        load_models(path)
