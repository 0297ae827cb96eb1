"""Paint by Example weights on ComfyUI's own UNet, VAE and model management.

The UNet is ComfyUI's `UNetModel`, built from the config `pbe_core` infers from the weights
(ComfyUI's detection misses small models and takes any 9-channel SD1 UNet for runway's
inpainting model, whose concat channels are in the other order and polarity). The VAE is
ComfyUI's, the exemplar encoder is `pbe_core`'s in a `ModelPatcher`, so the host moves all
three on and off the GPU.
"""

from __future__ import annotations

import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import comfy.utils
import torch
from comfy_api.v0_0_2 import io

from ..pbe_core import prepare
from ..pbe_core.checkpoint import CheckpointError, Weights, build_encoder, read_weights
from ..pbe_core.models.configs import (
    ConfigError,
    UNetConfig,
    VAEConfig,
    infer_unet_config,
    infer_vae_config,
)
from ..pbe_core.models.exemplar_encoder import ExemplarEncoder
from .folders import model_choices, resolve_model
from .messages import plain_errors

CATEGORY = "Paint by Example"
# The latent of a mid-grey picture (pixel value 0 in [-1, 1]) through the SD 1.x VAE, scaled:
# what the masked-image channels hold where everything is to be repainted.
GREY_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)


# ---------------------------------------------------------------------------------------------
# The model ComfyUI samples


class PaintByExampleModel(comfy.model_base.BaseModel):
    """SD 1.x UNet taking [noisy latent (4), masked-image latent (4), keep-mask (1)].

    ComfyUI's `concat_cond` rounds the latent-size mask; Paint by Example was trained on the
    binary pixel mask resized bilinearly and NOT rounded. This model makes that keep-mask itself,
    with `pbe_core.prepare`, from whatever edit mask the conditioning carries (`concat_mask`
    from InpaintModelConditioning or Paint by Example Inpaint Conditioning, else the sampler's
    noise mask), so the stock chain and this pack's nodes feed the UNet what it was trained on.
    """

    def __init__(self, model_config, model_type=comfy.model_base.ModelType.EPS, device=None):
        super().__init__(model_config, model_type, device=device)
        self.concat_keys = ("masked_image", "mask_inverted")

    @staticmethod
    def blank_inpaint_image_like(latent: torch.Tensor) -> torch.Tensor:
        grey = torch.tensor(GREY_LATENT, dtype=latent.dtype, device=latent.device)
        return grey.view(1, -1, *([1] * (latent.ndim - 2))).expand_as(latent).clone()

    def concat_cond(self, **kwargs) -> torch.Tensor:
        noise, device = kwargs["noise"], kwargs["device"]
        batch, latent_hw = noise.shape[0], noise.shape[-2:]
        edit_mask = kwargs.get("concat_mask", kwargs.get("denoise_mask"))
        if edit_mask is None:  # nothing marked: repaint everything
            keep = torch.zeros_like(noise[:, :1])
            return torch.cat([self.blank_inpaint_image_like(noise), keep], dim=1)
        image = kwargs.get("concat_latent_image")
        image = kwargs["latent_image"] if image is None else self.process_latent_in(image)
        if image.shape[-2:] != latent_hw:
            image = comfy.utils.common_upscale(
                image, latent_hw[1], latent_hw[0], "bilinear", "center"
            )
        if edit_mask.ndim == noise.ndim:
            edit_mask = edit_mask[:, :1]
        edit_mask = edit_mask.reshape(-1, 1, *edit_mask.shape[-2:]).float()
        keep = prepare.latent_keep_mask(prepare.edit_to_keep_mask(edit_mask), latent_hw)
        image = comfy.utils.resize_to_batch_size(image, batch).to(device)
        keep = comfy.utils.resize_to_batch_size(keep, batch).to(device, image.dtype)
        return torch.cat([image, keep], dim=1)


def is_paint_by_example(model) -> bool:
    return isinstance(getattr(model, "model", None), PaintByExampleModel)


def require_paint_by_example(model, name: str = "model") -> None:
    if not is_paint_by_example(model):
        raise ValueError(
            f"{name}: this MODEL is not a Paint by Example model loaded by 'Load Paint by Example "
            "Model'. Wire the MODEL output of that node here (a checkpoint loader would treat the "
            "9-channel UNet as a text-to-image inpainting model)."
        )


class PaintByExampleSupportedModel(comfy.supported_models.SD15):
    """SD 1.x settings (latent format, schedule, memory) with the UNet sizes of the weights."""

    unet_extra_config = {}  # heads come from the inferred config, not SD15's defaults

    def get_model(self, state_dict, prefix="", device=None):
        return PaintByExampleModel(self, device=device)


def comfy_unet_config(config: UNetConfig) -> dict:
    """pbe_core's UNet config -> ComfyUI UNetModel keyword arguments (SD 1.x family)."""
    depths = [config.transformer_depth if attends else 0 for attends in config.attention_levels]
    return {
        "image_size": 32,
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "model_channels": config.model_channels,
        "num_res_blocks": [config.num_res_blocks] * len(config.channel_mult),
        "channel_mult": list(config.channel_mult),
        "transformer_depth": [d for d in depths for _ in range(config.num_res_blocks)],
        # ComfyUI pops output depths from the end: deepest level last in this list.
        "transformer_depth_output": [d for d in depths for _ in range(config.num_res_blocks + 1)],
        "transformer_depth_middle": config.transformer_depth,
        "num_heads": config.num_heads,
        "num_head_channels": -1,
        "context_dim": config.context_dim,
        "use_spatial_transformer": True,
        "legacy": False,
        "use_linear_in_transformer": False,
        "adm_in_channels": None,
        "use_temporal_attention": False,
        "use_temporal_resblock": False,
    }


def _check_keys(expected: set[str], given: set[str], what: str) -> None:
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{what}: the weights do not fit the model built from them (missing {missing[:4]}, "
            f"unexpected {unexpected[:4]})."
        )


def load_unet(state: dict[str, torch.Tensor]) -> comfy.model_patcher.ModelPatcher:
    config = PaintByExampleSupportedModel(comfy_unet_config(infer_unet_config(state)))
    load_device = comfy.model_management.get_torch_device()
    offload_device = comfy.model_management.unet_offload_device()
    dtype = comfy.model_management.unet_dtype(
        model_params=comfy.utils.calculate_parameters(state),
        supported_dtypes=config.supported_inference_dtypes,
        weight_dtype=comfy.utils.weight_dtype(state),
    )
    manual_cast = comfy.model_management.unet_manual_cast(
        dtype, load_device, config.supported_inference_dtypes
    )
    config.set_inference_dtype(dtype, manual_cast)
    model = config.get_model({}).to(offload_device)
    _check_keys(set(model.diffusion_model.state_dict()), set(state), "UNet")
    model.diffusion_model.load_state_dict(state, strict=True)
    return comfy.model_patcher.ModelPatcher(
        model, load_device=load_device, offload_device=offload_device
    )


def comfy_vae_config(config: VAEConfig) -> dict:
    """pbe_core's VAE config -> the `config` ComfyUI's VAE takes for an AutoencoderKL."""
    ddconfig = {
        "double_z": True,
        "z_channels": config.z_channels,
        "resolution": 256,
        "in_channels": config.in_channels,
        "out_ch": config.out_channels,
        "ch": config.base_channels,
        "ch_mult": list(config.channel_mult),
        "num_res_blocks": config.num_res_blocks,
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    return {"params": {"ddconfig": ddconfig, "embed_dim": config.embed_dim}}


def load_vae(state: dict[str, torch.Tensor]) -> comfy.sd.VAE:
    config = infer_vae_config(state)
    if len(config.channel_mult) != 4:  # ComfyUI's VAE assumes the factor 8 of SD 1.x
        raise CheckpointError(
            f"VAE: {len(config.channel_mult)} levels; Paint by Example's VAE has 4 (factor 8)."
        )
    vae = comfy.sd.VAE(sd=state, config=comfy_vae_config(config))
    _check_keys(set(vae.first_stage_model.state_dict()), set(state), "VAE")
    return vae


def load_encoder(state: dict[str, torch.Tensor]) -> comfy.model_patcher.ModelPatcher:
    load_device = comfy.model_management.text_encoder_device()
    offload_device = comfy.model_management.text_encoder_offload_device()
    # The host's text-encoder dtype says fp16 even on the CPU, where fp16 is slow or unsupported.
    dtype = (
        torch.float32
        if load_device.type == "cpu"
        else comfy.model_management.text_encoder_dtype(load_device)
    )
    encoder = (
        build_encoder(state).to(device=offload_device, dtype=dtype).eval().requires_grad_(False)
    )
    return comfy.model_patcher.ModelPatcher(
        encoder, load_device=load_device, offload_device=offload_device
    )


def encoder_of(patcher: comfy.model_patcher.ModelPatcher) -> ExemplarEncoder:
    """The exemplar encoder, on its load device (moved there by the host's model management)."""
    if not isinstance(getattr(patcher, "model", None), ExemplarEncoder):
        raise ValueError(
            "encoder: expected the exemplar encoder output of 'Load Paint by Example Model'"
        )
    comfy.model_management.load_models_gpu([patcher])
    return patcher.model


def load_all(weights: Weights):
    try:
        return load_unet(weights.unet), load_vae(weights.vae), load_encoder(weights.encoder)
    except ConfigError as error:
        raise CheckpointError(f"not a Paint by Example model: {error}") from None


# ---------------------------------------------------------------------------------------------
# Node


@io.comfytype(io_type="PBE_EXEMPLAR_ENCODER")
class Encoder(io.ComfyTypeIO):
    """The exemplar encoder (CLIP image tower + mapper) in a ModelPatcher."""

    Type = comfy.model_patcher.ModelPatcher


class PaintByExampleModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PaintByExampleModelLoader",
            display_name="Load Paint by Example Model",
            category=CATEGORY,
            description="Loads Paint by Example weights (the released model.ckpt, a single-file "
            ".safetensors, or a diffusers folder) onto ComfyUI's UNet and VAE, with the exemplar "
            "image encoder.",
            inputs=[
                io.Combo.Input(
                    "ckpt_name",
                    options=model_choices(),
                    tooltip="Weights in models/paint_by_example (files or diffusers folders) or "
                    "models/checkpoints.",
                ),
            ],
            outputs=[
                io.Model.Output(
                    "model",
                    display_name="model",
                    tooltip="The 9-channel UNet; use it with the Paint by Example nodes or the "
                    "stock KSampler.",
                ),
                io.Vae.Output(
                    "vae", display_name="vae", tooltip="The SD 1.x VAE that came with the model."
                ),
                Encoder.Output(
                    "encoder",
                    display_name="encoder",
                    tooltip="The exemplar encoder (CLIP image tower + mapper) for 'Paint by "
                    "Example Exemplar Encode'.",
                ),
            ],
        )

    @classmethod
    @plain_errors
    def execute(cls, ckpt_name: str) -> io.NodeOutput:
        return io.NodeOutput(*load_all(read_weights(resolve_model(ckpt_name))))
