"""Key maps between diffusers and original Paint by Example state dicts, on tiny random models."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from diffusers.pipelines.stable_diffusion.convert_from_ckpt import (  # noqa: E402
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)
from transformers import CLIPVisionConfig  # noqa: E402

from pbe_core import keymaps  # noqa: E402

try:
    from diffusers.pipelines.deprecated.paint_by_example import PaintByExampleImageEncoder
except ImportError:  # diffusers before the pipeline was deprecated
    from diffusers.pipelines.paint_by_example import PaintByExampleImageEncoder

# Two layouts: attention on the first level only with 2 resnets per level, and attention on
# the deeper levels with 1 resnet per level (upsamplers then sit at index 2 of their block).
UNET_CONFIGS = {
    "attn-first-2-layers": dict(
        block_out_channels=(32, 64), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
    "attn-deep-1-layer": dict(
        block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")),
}


def _randomised(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict after drawing every parameter from N(0, 1), so none is zero."""
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            torch.nn.init.normal_(parameter)
    return model.state_dict()


def _tiny_unet(name: str) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8, in_channels=9, out_channels=4, cross_attention_dim=16,
        attention_head_dim=8, norm_num_groups=8, **UNET_CONFIGS[name])


def _tiny_vae(layers_per_block: int) -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
        layers_per_block=layers_per_block)


@pytest.fixture(scope="module")
def encoder() -> PaintByExampleImageEncoder:
    # diffusers gives (num_hidden_layers + 1) // 5 mapper blocks: 9 layers -> 2 blocks.
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=9, num_attention_heads=4,
        image_size=32, patch_size=8, projection_dim=16)
    model = PaintByExampleImageEncoder(config)
    _randomised(model)
    return model


def _assert_same(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(actual) == sorted(expected)
    for key, tensor in expected.items():
        assert torch.equal(actual[key], tensor), key


# ---------------------------------------------------------------- UNet


@pytest.mark.parametrize("name", UNET_CONFIGS)
def test_unet_round_trip_reuses_tensors(name: str) -> None:
    diffusers_sd = _randomised(_tiny_unet(name))
    back = keymaps.unet_to_diffusers(keymaps.unet_from_diffusers(diffusers_sd))
    assert sorted(back) == sorted(diffusers_sd)
    assert all(back[key] is tensor for key, tensor in diffusers_sd.items())


@pytest.mark.parametrize("name", UNET_CONFIGS)
def test_unet_original_names_agree_with_diffusers_converter(name: str) -> None:
    unet = _tiny_unet(name)
    diffusers_sd = _randomised(unet)
    original = keymaps.unet_from_diffusers(diffusers_sd)
    checkpoint = {"model.diffusion_model." + key: value for key, value in original.items()}
    _assert_same(convert_ldm_unet_checkpoint(checkpoint, dict(unet.config)), diffusers_sd)


def test_unet_original_names_first_layout() -> None:
    diffusers_sd = _randomised(_tiny_unet("attn-first-2-layers"))
    original = keymaps.unet_from_diffusers(diffusers_sd)
    expected = {
        "input_blocks.0.0.weight": "conv_in.weight",
        "time_embed.2.bias": "time_embedding.linear_2.bias",
        "input_blocks.1.0.in_layers.2.weight": "down_blocks.0.resnets.0.conv1.weight",
        "input_blocks.2.1.proj_in.weight": "down_blocks.0.attentions.1.proj_in.weight",
        "input_blocks.3.0.op.weight": "down_blocks.0.downsamplers.0.conv.weight",
        "input_blocks.4.0.skip_connection.weight": "down_blocks.1.resnets.0.conv_shortcut.weight",
        "middle_block.1.transformer_blocks.0.attn2.to_k.weight":
            "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
        "middle_block.2.out_layers.3.weight": "mid_block.resnets.1.conv2.weight",
        "output_blocks.2.1.conv.weight": "up_blocks.0.upsamplers.0.conv.weight",
        "output_blocks.3.0.emb_layers.1.weight": "up_blocks.1.resnets.0.time_emb_proj.weight",
        "output_blocks.5.1.transformer_blocks.0.ff.net.2.weight":
            "up_blocks.1.attentions.2.transformer_blocks.0.ff.net.2.weight",
        "out.0.weight": "conv_norm_out.weight",
        "out.2.weight": "conv_out.weight",
    }
    for original_key, diffusers_key in expected.items():
        assert original[original_key] is diffusers_sd[diffusers_key], original_key
    assert original["input_blocks.1.1.proj_in.weight"].shape == (32, 32, 1, 1)


def test_unet_upsampler_after_attention_sits_at_index_2() -> None:
    original = keymaps.unet_from_diffusers(_randomised(_tiny_unet("attn-deep-1-layer")))
    assert {"input_blocks.2.0.op.weight", "input_blocks.4.0.op.weight",
            "output_blocks.1.2.conv.weight", "output_blocks.3.2.conv.weight"} <= original.keys()
    assert not any(key.startswith(("input_blocks.1.1.", "output_blocks.5.1.")) for key in original)


# ---------------------------------------------------------------- VAE


@pytest.mark.parametrize("layers_per_block", [1, 2])
def test_vae_round_trip_and_converter_agree(layers_per_block: int) -> None:
    vae = _tiny_vae(layers_per_block)
    diffusers_sd = _randomised(vae)
    original = keymaps.vae_from_diffusers(diffusers_sd)
    back = keymaps.vae_to_diffusers(original)
    _assert_same(back, diffusers_sd)
    # Views only: every tensor still lives in the model's own memory.
    assert all(back[k].data_ptr() == t.data_ptr() for k, t in diffusers_sd.items())
    checkpoint = {"first_stage_model." + key: value for key, value in original.items()}
    _assert_same(convert_ldm_vae_checkpoint(checkpoint, dict(vae.config)), diffusers_sd)


def test_vae_original_names() -> None:
    diffusers_sd = _randomised(_tiny_vae(2))
    original = keymaps.vae_from_diffusers(diffusers_sd)
    same_object = {
        "decoder.up.1.upsample.conv.weight": "decoder.up_blocks.0.upsamplers.0.conv.weight",
        "decoder.up.0.block.2.conv1.weight": "decoder.up_blocks.1.resnets.2.conv1.weight",
        "decoder.up.0.block.0.nin_shortcut.weight":
            "decoder.up_blocks.1.resnets.0.conv_shortcut.weight",
        "encoder.down.0.downsample.conv.weight": "encoder.down_blocks.0.downsamplers.0.conv.weight",
        "encoder.mid.block_2.norm2.bias": "encoder.mid_block.resnets.1.norm2.bias",
        "encoder.mid.attn_1.norm.weight": "encoder.mid_block.attentions.0.group_norm.weight",
        "encoder.norm_out.weight": "encoder.conv_norm_out.weight",
        "post_quant_conv.weight": "post_quant_conv.weight",
    }
    for original_key, diffusers_key in same_object.items():
        assert original[original_key] is diffusers_sd[diffusers_key], original_key
    assert "decoder.up.1.upsample.conv.weight" in original
    assert "decoder.up.0.upsample.conv.weight" not in original  # the finest level has none
    for ldm, diffusers in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0")):
        conv = original[f"decoder.mid.attn_1.{ldm}.weight"]
        linear = diffusers_sd[f"decoder.mid_block.attentions.0.{diffusers}.weight"]
        assert conv.shape == (16, 16, 1, 1)
        assert conv.data_ptr() == linear.data_ptr() and torch.equal(conv[:, :, 0, 0], linear)


def test_vae_reads_old_diffusers_attention_names() -> None:
    diffusers_sd = _randomised(_tiny_vae(1))
    old_names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    old_sd = {}
    for key, value in diffusers_sd.items():
        for new, old in old_names.items():
            key = key.replace(f"attentions.0.{new}.", f"attentions.0.{old}.")
        old_sd[key] = value
    assert old_sd.keys() != diffusers_sd.keys()
    _assert_same(keymaps.vae_from_diffusers(old_sd), keymaps.vae_from_diffusers(diffusers_sd))


# ---------------------------------------------------------------- exemplar encoder


def test_encoder_original_names(encoder: PaintByExampleImageEncoder) -> None:
    diffusers_sd = encoder.state_dict()
    original = keymaps.encoder_from_diffusers(diffusers_sd)
    same_object = {
        "transformer.vision_model.embeddings.patch_embedding.weight":
            "model.embeddings.patch_embedding.weight",
        "transformer.vision_model.encoder.layers.8.mlp.fc2.bias":
            "model.encoder.layers.8.mlp.fc2.bias",
        "mapper.resblocks.1.ln_1.weight": "mapper.blocks.1.norm1.weight",
        "mapper.resblocks.1.ln_2.bias": "mapper.blocks.1.norm3.bias",
        "mapper.resblocks.0.attn.c_proj.weight": "mapper.blocks.0.attn1.to_out.0.weight",
        "mapper.resblocks.0.mlp.c_fc.weight": "mapper.blocks.0.ff.net.0.proj.weight",
        "mapper.resblocks.0.mlp.c_proj.bias": "mapper.blocks.0.ff.net.2.bias",
        "final_ln.weight": "final_layer_norm.weight",
        "proj_out.weight": "proj_out.weight",
        "learnable_vector": "uncond_vector",
    }
    for original_key, diffusers_key in same_object.items():
        assert original[original_key] is diffusers_sd[diffusers_key], original_key
    assert not any(".blocks." in key or key.startswith("model.") for key in original)


@pytest.mark.parametrize("block", [0, 1])
def test_mapper_qkv_thirds_are_q_k_v(encoder: PaintByExampleImageEncoder, block: int) -> None:
    # The reference (ldm/modules/encoders/xf.py) views c_qkv's output as (..., heads, 3 * head
    # width) and splits the last axis into q, k, v: with one head, rows [q; k; v].
    diffusers_sd = encoder.state_dict()
    original = keymaps.encoder_from_diffusers(diffusers_sd)
    width = 32
    for suffix in ("weight", "bias"):
        fused = original[f"mapper.resblocks.{block}.attn.c_qkv.{suffix}"]
        assert fused.shape[0] == 3 * width
        for third, name in enumerate(("to_q", "to_k", "to_v")):
            separate = diffusers_sd[f"mapper.blocks.{block}.attn1.{name}.{suffix}"]
            assert torch.equal(fused[third * width:(third + 1) * width], separate), name
    split = keymaps.encoder_to_diffusers(original)
    assert split[f"mapper.blocks.{block}.attn1.to_k.weight"].data_ptr() == (
        original[f"mapper.resblocks.{block}.attn.c_qkv.weight"][width:].data_ptr())


def test_encoder_round_trips(encoder: PaintByExampleImageEncoder) -> None:
    original = keymaps.encoder_from_diffusers(encoder.state_dict())
    written = keymaps.encoder_to_diffusers(original)
    _assert_same(keymaps.encoder_from_diffusers(written), original)
    # The published folder layout (model.vision_model.*, older transformers' stale position_ids)
    # reads the same, and is what gets written back.
    stale = {"model.vision_model.embeddings.position_ids": torch.arange(17)[None]}
    published = dict(written, **stale)
    _assert_same(keymaps.encoder_from_diffusers(published), original)
    assert all(key.startswith("model.vision_model.") for key in written if key.startswith("model."))


def test_written_encoder_folder_loads_in_diffusers(encoder: PaintByExampleImageEncoder,
                                                    tmp_path) -> None:
    from safetensors.torch import save_file

    written = keymaps.encoder_to_diffusers(keymaps.encoder_from_diffusers(encoder.state_dict()))
    encoder.save_pretrained(tmp_path)  # for its config.json
    # Thirds of c_qkv share memory, which safetensors refuses: clone them.
    save_file({k: v.clone() for k, v in written.items()}, tmp_path / "model.safetensors")
    loaded = PaintByExampleImageEncoder.from_pretrained(tmp_path)
    _assert_same(loaded.state_dict(), encoder.state_dict())


# ---------------------------------------------------------------- full checkpoint


@pytest.fixture(scope="module")
def parts(encoder: PaintByExampleImageEncoder) -> dict[str, dict[str, torch.Tensor]]:
    return {
        "unet": keymaps.unet_from_diffusers(_randomised(_tiny_unet("attn-first-2-layers"))),
        "vae": keymaps.vae_from_diffusers(_randomised(_tiny_vae(1))),
        "encoder": keymaps.encoder_from_diffusers(encoder.state_dict()),
    }


def test_join_uses_original_prefixes(parts: dict[str, dict[str, torch.Tensor]]) -> None:
    full = keymaps.join_original(**parts)
    assert len(full) == sum(map(len, parts.values()))
    assert full["learnable_vector"] is parts["encoder"]["learnable_vector"]
    assert full["proj_out.bias"] is parts["encoder"]["proj_out.bias"]
    assert full["model.diffusion_model.out.2.weight"] is parts["unet"]["out.2.weight"]
    assert full["first_stage_model.quant_conv.weight"] is parts["vae"]["quant_conv.weight"]
    for key in ("cond_stage_model.final_ln.weight", "cond_stage_model.mapper.resblocks.1.ln_1.bias",
                "cond_stage_model.transformer.vision_model.post_layernorm.weight"):
        assert key in full


def test_split_undoes_join_and_drops_buffers(parts: dict[str, dict[str, torch.Tensor]]) -> None:
    full = keymaps.join_original(**parts)
    checkpoint = dict(full, betas=torch.ones(4), alphas_cumprod=torch.ones(4),
                      **{"model_ema.decay": torch.tensor(0.999),
                         "cond_stage_model.transformer.vision_model.embeddings.position_ids":
                             torch.arange(17)[None]})
    split = keymaps.split_original(checkpoint)
    assert split.keys() == parts.keys()
    for name, part in parts.items():
        assert split[name].keys() == part.keys()
        assert all(split[name][key] is tensor for key, tensor in part.items())
    assert keymaps.join_original(**split).keys() == full.keys()


def test_split_prefers_ema_only_when_asked(parts: dict[str, dict[str, torch.Tensor]]) -> None:
    full = keymaps.join_original(**parts)
    ema = {"model_ema." + ("diffusion_model." + key).replace(".", ""): tensor + 1
           for key, tensor in parts["unet"].items()}
    checkpoint = dict(full, **ema)
    live = keymaps.split_original(checkpoint)["unet"]
    assert live["out.2.weight"] is parts["unet"]["out.2.weight"]
    unet = keymaps.split_original(checkpoint, prefer_ema=True)["unet"]
    assert unet.keys() == parts["unet"].keys()
    key = "input_blocks.3.0.op.weight"
    assert torch.equal(unet[key], parts["unet"][key] + 1)
    assert keymaps.split_original(full, prefer_ema=True)["unet"].keys() == parts["unet"].keys()
    ema.pop("model_ema.diffusion_modelout2weight")
    with pytest.raises(ValueError, match="model_ema.diffusion_modelout2weight"):
        keymaps.split_original(dict(full, **ema), prefer_ema=True)


# ---------------------------------------------------------------- bad input


def test_wrong_model_is_named(parts: dict[str, dict[str, torch.Tensor]]) -> None:
    vae_in_diffusers_names = keymaps.vae_to_diffusers(parts["vae"])
    with pytest.raises(ValueError, match="unet_from_diffusers.*unexpected keys.*conv_in"):
        keymaps.unet_from_diffusers(vae_in_diffusers_names)
    with pytest.raises(ValueError, match="missing keys.*input_blocks.0.0.weight"):
        keymaps.unet_to_diffusers(parts["vae"])
    with pytest.raises(ValueError, match="encoder_to_diffusers.*learnable_vector"):
        keymaps.encoder_to_diffusers({k: v for k, v in parts["encoder"].items()
                                      if k != "learnable_vector"})
    with pytest.raises(ValueError, match="unexpected keys.*mapper.resblocks.0.attn.bogus.weight"):
        keymaps.encoder_to_diffusers(dict(parts["encoder"], **{
            "mapper.resblocks.0.attn.bogus.weight": torch.ones(1)}))


def test_bad_checkpoints_are_named(parts: dict[str, dict[str, torch.Tensor]]) -> None:
    full = keymaps.join_original(**parts)
    with pytest.raises(ValueError, match="unexpected keys.*'optimizer_step'"):
        keymaps.split_original(dict(full, optimizer_step=torch.ones(1)))
    with pytest.raises(ValueError, match="missing keys.*first_stage_model"):
        keymaps.split_original({k: v for k, v in full.items() if not k.startswith("first_stage")})
    with pytest.raises(ValueError, match="checkpoint\\['state_dict'\\]"):
        keymaps.split_original({"state_dict": full, "global_step": torch.ones(1)})
    odd_qkv = dict(parts["encoder"], **{"mapper.resblocks.0.attn.c_qkv.bias": torch.ones(95)})
    with pytest.raises(ValueError, match="c_qkv.bias has 95 rows"):
        keymaps.encoder_to_diffusers(odd_qkv)


# ---------------------------------------------------------------- full size, on the meta device


def test_full_size_layout_matches_the_released_checkpoint() -> None:
    # No memory is allocated on "meta": this checks SD 1.x's well-known indices and the released
    # checkpoint's size (1.31 B parameters) without any weights.
    with torch.device("meta"):
        unet = UNet2DConditionModel(in_channels=9, out_channels=4, cross_attention_dim=768)
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        encoder = PaintByExampleImageEncoder(CLIPVisionConfig(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
            num_attention_heads=16, image_size=224, patch_size=14, projection_dim=768))
    full = keymaps.join_original(keymaps.unet_from_diffusers(unet.state_dict()),
                                 keymaps.vae_from_diffusers(vae.state_dict()),
                                 keymaps.encoder_from_diffusers(encoder.state_dict()))
    assert sum(key.startswith("model.diffusion_model.") for key in full) == 686
    assert sum(key.startswith("first_stage_model.") for key in full) == 248
    assert round(sum(tensor.numel() for tensor in full.values()) / 1e9, 2) == 1.31
    shapes = {
        "model.diffusion_model.input_blocks.9.0.op.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.8.2.conv.weight": (640, 640, 3, 3),
        "model.diffusion_model.output_blocks.11.1.proj_out.weight": (320, 320, 1, 1),
        "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
        "first_stage_model.decoder.up.0.block.2.conv1.weight": (128, 128, 3, 3),
        "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "cond_stage_model.mapper.resblocks.4.attn.c_qkv.weight": (3072, 1024),
        "learnable_vector": (1, 1, 768),
    }
    for key, shape in shapes.items():
        assert full[key].shape == shape, key
