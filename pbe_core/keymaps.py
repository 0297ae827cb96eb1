"""Key maps between Paint by Example state dicts: the original (ldm) names and diffusers' names.

The original names are this project's native ones. Every function here is pure: it returns a new
dict whose values are the input tensors themselves, or views of them (a 1x1-conv reshape, a third
of the fused mapper qkv); only fusing q, k, v into `c_qkv` allocates. Split thirds share storage,
so `safetensors.torch.save_file` needs them cloned first. Sizes (levels, blocks, layers) are read
from the keys present, never assumed to be Stable Diffusion 1.x's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

StateDict = dict[str, torch.Tensor]
# (diffusers name, original name, 1x1-conv weight on the original side) of sub-modules.
LeafTable = tuple[tuple[str, str, bool], ...]
Pair = tuple[str, str, LeafTable | None]  # (diffusers prefix, original prefix, leaf table)

# (prefix in the full original checkpoint, part, prefix inside that part's own dict)
ORIGINAL_PREFIXES: tuple[tuple[str, str, str], ...] = (
    ("model.diffusion_model.", "unet", ""),
    ("first_stage_model.", "vae", ""),
    ("cond_stage_model.", "encoder", ""),
    ("proj_out.", "encoder", "proj_out."),
    ("learnable_vector", "encoder", "learnable_vector"),
)
# Lightning/ldm buffers that hold no weights of the three models (the schedule is rebuilt).
_SCHEDULE_BUFFERS = frozenset({
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2", "scale_factor", "logvar",
})
# An arange buffer that older transformers saved and current ones neither keep nor accept.
_STALE_CLIP_BUFFER = "embeddings.position_ids"
_EMA_PREFIX = "model_ema."

_UNET_RESNET: LeafTable = (
    ("norm1", "in_layers.0", False), ("conv1", "in_layers.2", False),
    ("time_emb_proj", "emb_layers.1", False), ("norm2", "out_layers.0", False),
    ("conv2", "out_layers.3", False), ("conv_shortcut", "skip_connection", False),
)
_VAE_RESNET: LeafTable = (
    ("norm1", "norm1", False), ("conv1", "conv1", False), ("norm2", "norm2", False),
    ("conv2", "conv2", False), ("conv_shortcut", "nin_shortcut", False),
)
# Current diffusers names first (they are what gets written); older ones are read too.
_VAE_ATTENTION: LeafTable = (
    ("group_norm", "norm", False), ("to_q", "q", True), ("to_k", "k", True),
    ("to_v", "v", True), ("to_out.0", "proj_out", True),
    ("query", "q", True), ("key", "k", True), ("value", "v", True), ("proj_attn", "proj_out", True),
)
_MAPPER_BLOCK: LeafTable = (
    ("norm1", "ln_1", False), ("attn1.to_out.0", "attn.c_proj", False), ("norm3", "ln_2", False),
    ("ff.net.0.proj", "mlp.c_fc", False), ("ff.net.2", "mlp.c_proj", False),
)
_QKV = ("to_q", "to_k", "to_v")
_DIFFUSERS_QKV = re.compile(r"mapper\.blocks\.(\d+)\.attn1\.(to_[qkv])\.(weight|bias)")
_ORIGINAL_QKV = re.compile(r"mapper\.resblocks\.(\d+)\.attn\.c_qkv\.(weight|bias)")

_UNET_REQUIRED = ("input_blocks.0.0.weight", "time_embed.0.weight", "time_embed.2.weight",
                  "middle_block.0.in_layers.0.weight", "middle_block.2.in_layers.0.weight",
                  "out.0.weight", "out.2.weight")
_VAE_REQUIRED = ("encoder.conv_in.weight", "encoder.mid.block_1.conv1.weight",
                 "decoder.conv_in.weight", "decoder.mid.block_1.conv1.weight",
                 "quant_conv.weight", "post_quant_conv.weight")
_ENCODER_REQUIRED = ("transformer.vision_model.post_layernorm.weight", "final_ln.weight",
                     "proj_out.weight", "learnable_vector")


@dataclass(frozen=True)
class _Level:
    """One resolution level, in diffusers' order: attention flag per resnet, and a resampler."""

    attention: tuple[bool, ...]
    resample: bool


# ---------------------------------------------------------------- generic renaming


def _fail(what: str, missing: Iterable[str] = (), unexpected: Iterable[str] = ()) -> None:
    missing, unexpected = sorted(missing), sorted(unexpected)
    if missing or unexpected:
        raise ValueError(
            f"{what}: not convertible; missing keys {missing[:8]}, unexpected keys "
            f"{unexpected[:8]} ({len(missing)} missing, {len(unexpected)} unexpected in all). "
            "Pass the state dict of that one model, in the layout the function's name says."
        )


def _rename(sd: Mapping[str, torch.Tensor], pairs: list[Pair], to_original: bool, what: str,
            required: Iterable[str]) -> StateDict:
    """Rename by the longest matching module prefix, then by the module's leaf table.

    `required` are original-side keys, checked in whichever dict has the original names.
    """
    src, dst = (0, 1) if to_original else (1, 0)
    modules: dict[str, tuple[str, LeafTable | None]] = {}
    for pair in pairs:  # first entry wins: aliases listed later are read, never written
        modules.setdefault(pair[src], (pair[dst], pair[2]))
    out: StateDict = {}
    unexpected = []
    for key, tensor in sd.items():
        parts = key.split(".")
        prefix = next((p for p in (".".join(parts[:i]) for i in range(len(parts), 0, -1))
                       if p in modules), None)
        if prefix is None:
            unexpected.append(key)
            continue
        target, table = modules[prefix]
        rest = key[len(prefix) + 1:]
        if table is not None:
            leaf = next((row for row in table
                         if rest == row[src] or rest.startswith(row[src] + ".")), None)
            if leaf is None:
                unexpected.append(key)
                continue
            rest = leaf[dst] + rest[len(leaf[src]):]
            if leaf[2] and tensor.ndim == (2 if to_original else 4):  # (C, C) <-> (C, C, 1, 1)
                tensor = tensor[:, :, None, None] if to_original else tensor[:, :, 0, 0]
        out[f"{target}.{rest}" if rest else target] = tensor
    _fail(what, missing=set(required) - (out if to_original else sd).keys(), unexpected=unexpected)
    return out


def _indices(keys: Iterable[str], pattern: str) -> dict[int, set[str]]:
    """Group `pattern`'s (index, detail) matches by index."""
    found: dict[int, set[str]] = {}
    for match in filter(None, map(re.compile(pattern).match, keys)):
        found.setdefault(int(match[1]), set()).add(match[2])
    return found


def _diffusers_levels(keys: Iterable[str], blocks: str) -> list[_Level]:
    """Levels of `<blocks>.I.{resnets,attentions,*samplers}.J` keys."""
    parts = _indices(keys, rf"{re.escape(blocks)}\.(\d+)\.(\w+\.\d+)\.")
    levels = []
    for i in range(max(parts, default=-1) + 1):
        names = parts.get(i, set())
        resnets = sorted(int(n.split(".")[1]) for n in names if n.startswith("resnets."))
        levels.append(_Level(tuple(f"attentions.{j}" in names for j in resnets),
                             any("samplers." in n for n in names)))
    return levels


# ---------------------------------------------------------------- UNet


def _unet_pairs(down: list[_Level], up: list[_Level]) -> list[Pair]:
    pairs: list[Pair] = [
        ("conv_in", "input_blocks.0.0", None), ("time_embedding.linear_1", "time_embed.0", None),
        ("time_embedding.linear_2", "time_embed.2", None),
        ("mid_block.resnets.0", "middle_block.0", _UNET_RESNET),
        ("mid_block.attentions.0", "middle_block.1", None),
        ("mid_block.resnets.1", "middle_block.2", _UNET_RESNET),
        ("conv_norm_out", "out.0", None), ("conv_out", "out.2", None),
    ]
    block = 1  # input_blocks.0 is conv_in; every resnet and every downsampler is a block
    for i, level in enumerate(down):
        for j, has_attention in enumerate(level.attention):
            pairs.append((f"down_blocks.{i}.resnets.{j}", f"input_blocks.{block}.0", _UNET_RESNET))
            if has_attention:
                pairs.append((f"down_blocks.{i}.attentions.{j}", f"input_blocks.{block}.1", None))
            block += 1
        if level.resample:
            pairs.append((f"down_blocks.{i}.downsamplers.0.conv", f"input_blocks.{block}.0.op",
                          None))
            block += 1
    block = 0  # the upsampler sits inside the level's last block, after its attention if any
    for i, level in enumerate(up):
        for j, has_attention in enumerate(level.attention):
            pairs.append((f"up_blocks.{i}.resnets.{j}", f"output_blocks.{block}.0", _UNET_RESNET))
            if has_attention:
                pairs.append((f"up_blocks.{i}.attentions.{j}", f"output_blocks.{block}.1", None))
            if level.resample and j == len(level.attention) - 1:
                pairs.append((f"up_blocks.{i}.upsamplers.0.conv",
                               f"output_blocks.{block}.{2 if has_attention else 1}.conv", None))
            block += 1
    return pairs


def _original_unet_levels(keys: Iterable[str]) -> tuple[list[_Level], list[_Level]]:
    """Cut ldm's flat input/output block lists into levels at their resamplers."""
    keys = list(keys)
    down: list[_Level] = []
    up: list[_Level] = []
    for levels, stage, first in ((down, "input", 1), (up, "output", 0)):
        blocks = _indices(keys, rf"{stage}_blocks\.(\d+)\.(\d+\.\w+)")
        attention: list[bool] = []
        for block in range(first, max(blocks, default=first - 1) + 1):
            names = blocks.get(block, set())
            if "0.op" not in names:  # a downsampler is a block of its own, an upsampler is not
                attention.append(any(n.startswith("1.") and n != "1.conv" for n in names))
            if names & {"0.op", "1.conv", "2.conv"}:
                levels.append(_Level(tuple(attention), True))
                attention = []
        levels += [_Level(tuple(attention), False)] if attention else []
    return down, up


def unet_from_diffusers(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """diffusers `UNet2DConditionModel` state dict -> ldm `UNetModel` names."""
    pairs = _unet_pairs(_diffusers_levels(sd, "down_blocks"), _diffusers_levels(sd, "up_blocks"))
    return _rename(sd, pairs, True, "unet_from_diffusers", _UNET_REQUIRED)


def unet_to_diffusers(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """ldm `UNetModel` state dict -> diffusers `UNet2DConditionModel` names."""
    pairs = _unet_pairs(*_original_unet_levels(sd))
    return _rename(sd, pairs, False, "unet_to_diffusers", _UNET_REQUIRED)


# ---------------------------------------------------------------- VAE


def _vae_pairs(down: list[_Level], up: list[_Level]) -> list[Pair]:
    pairs: list[Pair] = [("quant_conv", "quant_conv", None),
                         ("post_quant_conv", "post_quant_conv", None)]
    for part in ("encoder", "decoder"):
        pairs += [
            (f"{part}.conv_in", f"{part}.conv_in", None),
            (f"{part}.mid_block.resnets.0", f"{part}.mid.block_1", _VAE_RESNET),
            (f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1", _VAE_ATTENTION),
            (f"{part}.mid_block.resnets.1", f"{part}.mid.block_2", _VAE_RESNET),
            (f"{part}.conv_norm_out", f"{part}.norm_out", None),
            (f"{part}.conv_out", f"{part}.conv_out", None),
        ]
    for i, level in enumerate(down):
        pairs += [(f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}",
                   _VAE_RESNET) for j in range(len(level.attention))]
        if level.resample:
            pairs.append((f"encoder.down_blocks.{i}.downsamplers.0.conv",
                          f"encoder.down.{i}.downsample.conv", None))
    for i, level in enumerate(up):
        ldm_level = len(up) - 1 - i  # ldm counts decoder levels from the finest resolution
        pairs += [(f"decoder.up_blocks.{i}.resnets.{j}", f"decoder.up.{ldm_level}.block.{j}",
                   _VAE_RESNET) for j in range(len(level.attention))]
        if level.resample:
            pairs.append((f"decoder.up_blocks.{i}.upsamplers.0.conv",
                          f"decoder.up.{ldm_level}.upsample.conv", None))
    return pairs


def _original_vae_levels(keys: Iterable[str], part: str, stage: str) -> list[_Level]:
    parts = _indices(keys, rf"{part}\.{stage}\.(\d+)\.(block\.\d+|\w+sample)\.")
    return [_Level((False,) * sum(n.startswith("block.") for n in parts.get(i, set())),
                   bool({"downsample", "upsample"} & parts.get(i, set())))
            for i in range(max(parts, default=-1) + 1)]


def vae_from_diffusers(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """diffusers `AutoencoderKL` state dict -> ldm `AutoencoderKL` names."""
    pairs = _vae_pairs(_diffusers_levels(sd, "encoder.down_blocks"),
                       _diffusers_levels(sd, "decoder.up_blocks"))
    return _rename(sd, pairs, True, "vae_from_diffusers", _VAE_REQUIRED)


def vae_to_diffusers(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """ldm `AutoencoderKL` state dict -> diffusers `AutoencoderKL` names."""
    pairs = _vae_pairs(_original_vae_levels(sd, "encoder", "down"),
                       _original_vae_levels(sd, "decoder", "up")[::-1])
    return _rename(sd, pairs, False, "vae_to_diffusers", _VAE_REQUIRED)


# ---------------------------------------------------------------- exemplar encoder


def _encoder_pairs(blocks: Iterable[int]) -> list[Pair]:
    return [
        ("model.vision_model", "transformer.vision_model", None),  # diffusers folders on disk
        ("model", "transformer.vision_model", None),  # transformers >= 5 in memory: read only
        ("final_layer_norm", "final_ln", None), ("proj_out", "proj_out", None),
        ("uncond_vector", "learnable_vector", None),
    ] + [(f"mapper.blocks.{n}", f"mapper.resblocks.{n}", _MAPPER_BLOCK) for n in blocks]


def _encoder_rename(sd: Mapping[str, torch.Tensor], qkv_pattern: re.Pattern[str],
                    to_original: bool, what: str) -> tuple[StateDict, dict[str, re.Match[str]]]:
    """Rename all but the mapper's q/k/v tensors, which are returned (matched) for (un)fusing."""
    sd = {k: v for k, v in sd.items() if not k.endswith(_STALE_CLIP_BUFFER)}
    qkv = {k: m for k in sd if (m := qkv_pattern.fullmatch(k))}
    pairs = _encoder_pairs({int(m[1]) for m in qkv.values()})
    rest = {k: v for k, v in sd.items() if k not in qkv}
    return _rename(rest, pairs, to_original, what, _ENCODER_REQUIRED), qkv


def encoder_from_diffusers(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """diffusers `PaintByExampleImageEncoder` state dict -> original exemplar-encoder names.

    The mapper's separate q, k, v Linears are stacked into `c_qkv` rows [q; k; v]: the reference
    views c_qkv's output as (batch, tokens, heads, 3 * head_dim) and splits the last axis into
    q, k, v, so with its single head the three are contiguous thirds.
    """
    what = "encoder_from_diffusers"
    out, qkv = _encoder_rename(sd, _DIFFUSERS_QKV, True, what)
    groups = {(m[1], m[3]): [f"mapper.blocks.{m[1]}.attn1.{p}.{m[3]}" for p in _QKV]
              for m in qkv.values()}
    _fail(what, missing={name for group in groups.values() for name in group} - qkv.keys())
    for (block, suffix), group in groups.items():
        out[f"mapper.resblocks.{block}.attn.c_qkv.{suffix}"] = torch.cat([sd[k] for k in group])
    return out


def encoder_to_diffusers(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Original exemplar-encoder state dict -> diffusers `PaintByExampleImageEncoder` names.

    The CLIP tower is written as `model.vision_model.*`, the layout of published diffusers
    folders, which both transformers 4 and 5 load. `c_qkv` is split into views of its thirds.
    """
    what = "encoder_to_diffusers"
    out, qkv = _encoder_rename(sd, _ORIGINAL_QKV, False, what)
    for key, match in qkv.items():
        if sd[key].shape[0] % 3:
            raise ValueError(f"{what}: {key} has {sd[key].shape[0]} rows, not 3 * width")
        for name, third in zip(_QKV, sd[key].chunk(3), strict=True):
            out[f"mapper.blocks.{match[1]}.attn1.{name}.{match[2]}"] = third
    return out


# ---------------------------------------------------------------- full original checkpoint


def _ema_unet(sd: Mapping[str, torch.Tensor], unet: StateDict) -> StateDict:
    """The UNet's EMA weights: ldm stores `model_ema.` + the dotless `diffusion_model.<key>`."""
    ema_names = {k: _EMA_PREFIX + ("diffusion_model." + k).replace(".", "") for k in unet}
    missing = [name for name in ema_names.values() if name not in sd]
    _fail("split_original(prefer_ema=True): incomplete EMA weights", missing=missing)
    return {k: sd[name] for k, name in ema_names.items()}


def split_original(sd: Mapping[str, torch.Tensor], prefer_ema: bool = False
                   ) -> dict[str, StateDict]:
    """Full original checkpoint state dict -> {"unet": ..., "vae": ..., "encoder": ...}.

    Schedule buffers, the stale CLIP `position_ids` buffer and `model_ema.*` are dropped; with
    `prefer_ema`, the UNet's EMA weights replace the live ones when the checkpoint holds any.
    """
    if "state_dict" in sd:
        raise ValueError(
            "split_original: got a whole Lightning checkpoint; pass checkpoint['state_dict']")
    parts: dict[str, StateDict] = {"unet": {}, "vae": {}, "encoder": {}}
    unexpected = []
    for key, tensor in sd.items():
        row = next((r for r in ORIGINAL_PREFIXES if key.startswith(r[0])), None)
        if row is not None and not key.endswith(_STALE_CLIP_BUFFER):
            parts[row[1]][row[2] + key[len(row[0]):]] = tensor
        elif row is None and key not in _SCHEDULE_BUFFERS and not key.startswith(_EMA_PREFIX):
            unexpected.append(key)
    _fail("split_original", unexpected=unexpected,
          missing=[r[0] + "*" for r in ORIGINAL_PREFIXES if not parts[r[1]]])
    if prefer_ema and any(k.startswith(_EMA_PREFIX + "diffusion_model") for k in sd):
        parts["unet"] = _ema_unet(sd, parts["unet"])
    return parts


def join_original(unet: Mapping[str, torch.Tensor], vae: Mapping[str, torch.Tensor],
                  encoder: Mapping[str, torch.Tensor]) -> StateDict:
    """Inverse of `split_original`: the three parts -> one original checkpoint state dict."""
    out: StateDict = {}
    for part, sd in (("unet", unet), ("vae", vae), ("encoder", encoder)):
        rows = sorted((r for r in ORIGINAL_PREFIXES if r[1] == part), key=lambda r: -len(r[2]))
        for key, tensor in sd.items():
            prefix, _, local = next(r for r in rows if key.startswith(r[2]))
            out[prefix + key[len(local):]] = tensor
    return out
