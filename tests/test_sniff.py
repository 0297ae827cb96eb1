"""Telling Paint by Example weights from other files by their header alone."""

from __future__ import annotations

import json
import pickle
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from pbe_core.sniff import lora_problem, paint_by_example_problem
from pbe_core.testing import tiny_weights, write_layout


@pytest.mark.parametrize("layout", ["ckpt", "safetensors", "diffusers"])
def test_every_layout_is_recognised(tmp_path, layout):
    assert paint_by_example_problem(write_layout(tiny_weights(0), layout, tmp_path)) is None


def test_legacy_pickle_is_recognised(tmp_path):
    path = write_layout(tiny_weights(0), "ckpt", tmp_path)
    state = torch.load(path, weights_only=True)
    legacy = tmp_path / "legacy.ckpt"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    assert paint_by_example_problem(legacy) is None


def test_only_the_header_is_read(tmp_path):
    """A file cut short after its header is still told apart: no tensor is read."""
    full = write_layout(tiny_weights(0), "safetensors", tmp_path)
    data = full.read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: header + 10])
    assert paint_by_example_problem(cut) is None


def test_a_pickle_is_never_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled')",))

    path = tmp_path / "evil.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"learnable_vector": Boom()}))
    assert paint_by_example_problem(path) is not None  # no mapper key; and no SystemExit


@pytest.mark.parametrize(
    ("keys", "reason"),
    [
        (["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
          "model.diffusion_model.input_blocks.0.0.weight"], "text-conditioned Stable Diffusion"),
        (["model.diffusion_model.input_blocks.0.0.weight"], "UNet but not the exemplar encoder"),
        (["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"], "a LoRA"),
        (["something.else"], "none of its tensors"),
    ],
)
def test_foreign_files_say_what_they_are(tmp_path, keys, reason):
    path = tmp_path / "foreign.safetensors"
    save_file({key: torch.zeros(1) for key in keys}, path)
    assert reason in paint_by_example_problem(path)


def test_damaged_and_foreign_files(tmp_path):
    (tmp_path / "text.ckpt").write_text("hello")
    (tmp_path / "cut.safetensors").write_bytes((10**6).to_bytes(8, "little") + b"{")
    assert "neither" in paint_by_example_problem(tmp_path / "text.ckpt")
    assert "unreadable" in paint_by_example_problem(tmp_path / "cut.safetensors")


def test_diffusers_folders(tmp_path):
    other = tmp_path / "sd"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    assert "StableDiffusionPipeline" in paint_by_example_problem(other)
    (tmp_path / "bare" / "unet").mkdir(parents=True)
    assert "image_encoder" in paint_by_example_problem(tmp_path / "bare")


def lora_file(tmp_path, keys, metadata=None):
    path = tmp_path / "lora.safetensors"
    save_file({key: torch.zeros(1) for key in keys}, path, metadata=metadata)
    return path


PBE_LORA_KEYS = [
    "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.lora_down.weight",
    "cond_stage_model.mapper.resblocks.0.attn.in_proj_weight",
    "learnable_vector",
]


def test_a_paint_by_example_lora_is_a_lora_not_a_model(tmp_path):
    path = lora_file(tmp_path, PBE_LORA_KEYS, {"pbe_lora": "{}"})
    assert lora_problem(path) is None
    assert paint_by_example_problem(path) == "a LoRA, not a full model"


@pytest.mark.parametrize(
    ("keys", "reason"),
    [
        (["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"], "text-conditioned"),
        (PBE_LORA_KEYS, "without the Paint by Example description"),
        (["model.diffusion_model.input_blocks.0.0.weight"], "no LoRA"),
    ],
)
def test_other_files_are_no_paint_by_example_lora(tmp_path, keys, reason):
    assert reason in lora_problem(lora_file(tmp_path, keys))
    (tmp_path / "old.ckpt").write_bytes(b"PK\x03\x04 not really")
    assert lora_problem(tmp_path / "old.ckpt") == "not a safetensors file"
