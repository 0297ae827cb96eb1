"""Short training runs on the tiny config: the loss falls, the result loads and edits, a LoRA
applied equals a LoRA merged, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from pbe_core import sampling
from pbe_core.checkpoint import load_models, save_single_file, weights_of
from pbe_core.pipeline import PaintByExample
from pbe_core.train import TrainConfig, Trainer
from pbe_core.train.loop import SampleStream, diffusion_loss
from pbe_core.train.lora import LoRAError, apply_lora, read_lora, save_lora
from pbe_core.train.trainer import StateError


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors on a shared 2-core machine run many times faster on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pictures(count: int = 6):
    """Grey noise scenes, each with one coloured rectangle (the object) and its box."""
    rng = np.random.default_rng(0)
    items = []
    for index in range(count):
        pixels = rng.integers(60, 200, (64, 80, 3), dtype=np.uint8)
        x0, y0 = 10 + 4 * index, 12 + 2 * index
        box = (x0, y0, x0 + 24, y0 + 24)
        pixels[box[1] : box[3], box[0] : box[2]] = rng.integers(0, 256, 3)
        items.append((Image.fromarray(pixels), box))
    return items


def config(**changes) -> TrainConfig:
    base = dict(steps=4, resolution=64, batch_size=2, lr=1e-3, warmup_steps=0)
    return TrainConfig(**{**base, **changes})


def trained_tensors(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trainer.parameters.items()}


def test_the_loss_falls_on_held_fixed_batches(tiny):
    """The loss on fixed evaluation batches (fixed samples, timesteps and noise) falls."""
    models = copy.deepcopy(tiny)
    source = pictures()
    settings = config(steps=12, lr=2e-3)
    stream = SampleStream(source, settings, models.encoder.config.image_size)
    batches = [stream.batch(1000 + 4 * i, 4) for i in range(3)]  # samples not drawn in training
    alphas = sampling.scaled_linear_schedule().alphas_cumprod

    @torch.no_grad()
    def held_out_loss() -> float:
        losses = [
            diffusion_loss(models, batch, torch.Generator().manual_seed(i), alphas, 0.2).item()
            for i, batch in enumerate(batches)
        ]
        return float(np.mean(losses))

    before = held_out_loss()
    result = Trainer(models, source, settings).run()
    after = held_out_loss()
    assert result.step == 12 and len(result.losses) == 12
    assert after < 0.8 * before, (before, after, result.losses)


def test_a_full_fine_tune_loads_and_edits(tiny, tmp_path):
    models = copy.deepcopy(tiny)
    Trainer(models, pictures(), config(steps=2)).run()
    path = save_single_file(weights_of(models), tmp_path / "tuned.safetensors")
    loaded = load_models(path)
    for name, tensor in models.unet.state_dict().items():
        assert torch.equal(loaded.unet.state_dict()[name], tensor)
    assert not torch.equal(loaded.unet.state_dict()["out.2.weight"], tiny.unet.state_dict()["out.2.weight"])
    picture, box = pictures(1)[0]
    mask = Image.new("L", picture.size, 0)
    mask.paste(255, box)
    [result] = PaintByExample(loaded).edit(picture, mask, picture.crop(box), steps=2, resolution=64)
    assert result.size == picture.size


def test_resume_equals_an_uninterrupted_run(tiny, tmp_path):
    settings = config(steps=4, grad_accum=2)
    straight = Trainer(copy.deepcopy(tiny), pictures(), settings)
    straight.run()

    first = Trainer(copy.deepcopy(tiny), pictures(), settings)
    result = first.run(every=lambda step: first.request_stop() if step == 2 else None)
    assert result.interrupted and result.step == 2
    state = first.save_state(tmp_path / "state.pt")

    resumed = Trainer(copy.deepcopy(tiny), pictures(), settings)
    resumed.load_state(state)
    assert resumed.step == 2
    assert resumed.run().step == 4
    for name, tensor in trained_tensors(straight).items():
        assert torch.equal(resumed.parameters[name], tensor), name

    other = Trainer(copy.deepcopy(tiny), pictures(), config(steps=4, seed=1))
    with pytest.raises(StateError, match="seed 0"):
        other.load_state(state)
    with pytest.raises(StateError, match="no such training state"):
        other.load_state(tmp_path / "missing.pt")
    torch.save({"state_dict": {}}, tmp_path / "model.ckpt")
    with pytest.raises(StateError, match="not a training state"):
        other.load_state(tmp_path / "model.ckpt")


def unet_output(models, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 9, 8, 8, generator=generator)
    context = torch.randn(2, 1, models.unet.config.context_dim, generator=generator)
    with torch.no_grad():
        return models.unet(x, torch.tensor([10.0, 500.0]), context)


def test_lora_applied_equals_lora_merged(tiny, tmp_path):
    models = copy.deepcopy(tiny)
    settings = config(steps=3, lora_rank=4, lora_alpha=2.0, lora_targets=("attention", "proj", "conv"),
                      lr=1e-2)
    trainer = Trainer(models, pictures(), settings)
    result = trainer.run()
    assert torch.equal(models.unet.state_dict()["out.2.weight"], tiny.unet.state_dict()["out.2.weight"])
    with result.adapters.attached():
        live = unet_output(models)
    assert not torch.allclose(live, unet_output(tiny), atol=1e-4)  # the adapters do something
    path = save_lora(result.adapters, models, tmp_path / "adapter.safetensors",
                     ("mapper", "final_ln", "proj_out", "learnable_vector"))

    with safe_open(str(path), framework="pt") as handle:
        keys = set(handle.keys())
    assert "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.lora_down.weight" in keys
    assert "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_out.0.lora_up.weight" in keys
    assert "diffusion_model.input_blocks.1.1.proj_in.alpha" in keys
    assert "cond_stage_model.mapper.resblocks.0.attn.c_qkv.weight" in keys
    assert {"proj_out.weight", "learnable_vector", "cond_stage_model.final_ln.weight"} <= keys
    assert not any("transformer.vision_model" in k or "first_stage_model" in k for k in keys)
    _, description = read_lora(path)
    assert description["rank"] == 4 and description["alpha"] == 2.0

    merged = apply_lora(copy.deepcopy(tiny), path)
    assert (unet_output(merged) - live).abs().max() < 1e-5
    assert torch.equal(merged.encoder.learnable_vector, models.encoder.learnable_vector)
    assert torch.equal(merged.encoder.mapper.resblocks[0].attn.c_qkv.weight,
                       models.encoder.mapper.resblocks[0].attn.c_qkv.weight)
    half = apply_lora(copy.deepcopy(tiny), path, strength=0.5)
    expected = (tiny.encoder.learnable_vector + models.encoder.learnable_vector) / 2
    assert torch.allclose(half.encoder.learnable_vector, expected, atol=1e-6)


def test_lora_errors_name_the_problem(tiny, tiny_paths, tmp_path):
    with pytest.raises(LoRAError, match="not a Paint by Example LoRA"):
        apply_lora(copy.deepcopy(tiny), tiny_paths["safetensors"])
    save_file({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 8)},
              str(tmp_path / "sd.safetensors"))
    with pytest.raises(LoRAError, match="text-conditioned"):
        apply_lora(copy.deepcopy(tiny), tmp_path / "sd.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file at all")
    with pytest.raises(LoRAError, match="not a safetensors LoRA"):
        apply_lora(copy.deepcopy(tiny), tmp_path / "junk.safetensors")

    trainer = Trainer(copy.deepcopy(tiny), pictures(), config(steps=1, lora_rank=2))
    path = save_lora(trainer.run().adapters, trainer.models, tmp_path / "a.safetensors", ("proj_out",))
    with safe_open(str(path), framework="pt") as handle:
        tensors, metadata = {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()
    key = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.lora_down.weight"
    tensors[key] = torch.zeros(2, 7)
    save_file(tensors, str(tmp_path / "wrong.safetensors"), metadata=metadata)
    untouched = copy.deepcopy(tiny)
    with pytest.raises(LoRAError, match="another base model"):
        apply_lora(untouched, tmp_path / "wrong.safetensors")
    assert torch.equal(untouched.encoder.proj_out.weight, tiny.encoder.proj_out.weight)  # nothing half-applied
