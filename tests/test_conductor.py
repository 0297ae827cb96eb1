"""pbe_core.conductor: one edit sequence on any host's parts; best of N by region CLIP score."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pbe_core import prepare, sampling
from pbe_core.conductor import SampleJob, conduct_edit
from pbe_core.pipeline import PaintByExample

SIZE = 64
BOX = (13, 19, 45, 51)  # off the 8-pixel grid: a soft latent mask border


def scene() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))


def box_mask() -> Image.Image:
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, BOX)
    return mask


def exemplar() -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def pipe(tiny):
    return PaintByExample(tiny, device="cpu", dtype=torch.float32)


class HostParts:
    """A second, independent set of parts on the same models, shaped like a host's: it takes
    pixels in [0, 1] channels-last at its VAE, keeps its latents unscaled, draws its own noise
    for the whole batch from one seed and runs DDIM written out here."""

    def __init__(self, models, steps: int, guidance: float):
        self.models, self.steps, self.guidance = models, steps, guidance
        self.exemplar_size = models.encoder.config.image_size
        self.jobs: list[SampleJob] = []
        self.masked: list[torch.Tensor] = []

    @property
    def clip_tower(self):
        return self.models.encoder.transformer

    def encode_exemplars(self, pixels):
        return self.models.encoder(pixels)

    def unconditional(self):
        return self.models.encoder.learnable_vector.clone()

    def encode_masked(self, masked):
        self.masked.append(masked)
        image = ((masked + 1) / 2).movedim(1, -1)  # a host's IMAGE
        mean, _ = self.models.vae.encode_moments(image.movedim(-1, 1) * 2 - 1)
        return mean  # unscaled, as a host's VAE gives it

    def sample(self, job):
        self.jobs.append(job)
        scale = self.models.vae.config.scaling_factor
        latent_hw = tuple(s // 8 for s in job.keep.shape[-2:])
        keep = torch.nn.functional.interpolate(job.keep, size=latent_hw, mode="bilinear", align_corners=False)
        concat = torch.cat([job.masked_latent * scale, keep], dim=1)
        generator = torch.Generator().manual_seed(job.seeds[0])
        x = torch.randn((len(job.seeds), 4, *latent_hw), generator=generator)
        schedule = sampling.scaled_linear_schedule()
        timesteps = [i * (1000 // self.steps) + 1 for i in reversed(range(self.steps))]
        alphas = schedule.alphas_cumprod
        uncond = job.uncond.expand_as(job.cond)
        for index, t in enumerate(timesteps):
            alpha = float(alphas[t])
            alpha_prev = float(alphas[timesteps[index + 1]]) if index + 1 < len(timesteps) else float(alphas[0])
            tt = torch.full((x.shape[0],), float(t))
            e_u = self.models.unet(torch.cat([x, concat], 1), tt, uncond)
            e_c = self.models.unet(torch.cat([x, concat], 1), tt, job.cond)
            eps = e_u + self.guidance * (e_c - e_u)
            x0 = (x - (1 - alpha) ** 0.5 * eps) / alpha**0.5
            x = alpha_prev**0.5 * x0 + (1 - alpha_prev) ** 0.5 * eps
        return x / scale  # unscaled, as a host's sampler would hand its VAE

    def decode(self, latents):
        return (self.models.vae.decode(latents) + 1) / 2


def test_a_host_parts_reproduce_the_pipeline(pipe, tiny):
    """Same sequence, other parts: with a matching sampler and the same noise the results agree."""
    steps, seed = 4, 3
    host = HostParts(tiny, steps, guidance=5.0)
    ours = conduct_edit(host, scene(), box_mask(), exemplar(), seed=seed, feather=3, resolution=64)
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(seed))
    core = pipe.run(scene(), box_mask(), exemplar(), sampler="ddim", steps=steps, seed=seed,
                    feather=3, resolution=64, noise=noise)
    assert ours.region == core.region
    assert (ours.decoded - core.decoded).abs().max() < 1e-4
    assert (ours.images - core.images).abs().max() < 1e-4
    before = prepare.image_to_tensor(scene())
    assert (ours.images - before).abs().mean() > 0.01  # the edit changed something
    [job] = host.jobs
    assert job.keep.unique().tolist() == [0.0, 1.0]  # binary, 1 = keep
    assert job.seeds == [seed]
    [masked] = host.masked
    assert masked.min() >= -1 and masked.max() <= 1
    assert torch.all(masked * (1 - job.keep) == 0)  # the edit region is grey (0)


def test_batch_and_exemplar_pairing_reach_the_parts(tiny):
    host = HostParts(tiny, 1, guidance=5.0)
    two = [exemplar(), exemplar().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    conduct_edit(host, [scene(), scene()], box_mask(), two, seed=7, resolution=64)
    [job] = host.jobs
    assert job.cond.shape[0] == 2 and job.seeds == [7, 8]
    assert not torch.allclose(job.cond[0], job.cond[1])
    host = HostParts(tiny, 1, guidance=5.0)
    conduct_edit(host, scene(), box_mask(), exemplar(), seed=7, batch_size=3, resolution=64,
                 negative_exemplar=scene(), negative_weight=0.5)
    [job] = host.jobs
    assert job.seeds == [7, 8, 9]
    learned = tiny.encoder.learnable_vector
    assert not torch.allclose(job.uncond, learned)  # the negative exemplar is blended in


def test_candidates_are_ranked_by_region_clip_score(pipe):
    common = dict(steps=2, sampler="ddim", resolution=64, feather=2)
    ranked = pipe.run(scene(), box_mask(), exemplar(), seed=10, candidates=3, **common)
    assert ranked.images.shape[0] == 3 and sorted(ranked.seeds) == [10, 11, 12]
    assert torch.all(ranked.scores[:-1] >= ranked.scores[1:])
    assert ranked.scores[0] > ranked.scores[-1]
    rescored = pipe.region_clip_score(ranked.images, box_mask(), exemplar())
    assert torch.allclose(rescored, ranked.scores, atol=1e-3)
    # the best candidate is exactly what its seed gives alone
    alone = pipe.run(scene(), box_mask(), exemplar(), seed=ranked.seeds[0], **common)
    assert torch.allclose(alone.images[0], ranked.images[0], atol=1e-5)
    [best] = pipe.edit(scene(), box_mask(), exemplar(), seed=10, candidates=3, **common)
    assert np.array_equal(np.asarray(best), np.asarray(prepare.to_pil(ranked.images[0])))


def test_candidates_with_another_tower_and_bad_combinations(pipe, tiny):
    common = dict(steps=1, sampler="ddim", resolution=64)
    mean_colour = lambda pixels: pixels.mean(dim=(2, 3))  # noqa: E731
    with pytest.raises(ValueError, match="size="):  # a bare callable says nothing of its size
        pipe.run(scene(), box_mask(), exemplar(), candidates=2, score_tower=mean_colour, **common)
    ranked = pipe.run(scene(), box_mask(), exemplar(), candidates=2, score_tower=tiny.encoder, **common)
    assert ranked.scores.shape == (2,)
    with pytest.raises(ValueError, match="not both"):
        pipe.run(scene(), box_mask(), exemplar(), candidates=2, batch_size=2, **common)
    with pytest.raises(ValueError, match="repeats one input"):
        pipe.run([scene(), scene()], box_mask(), exemplar(), candidates=2, **common)


@pytest.mark.parametrize("option, value", [
    ("multiple", 0), ("mask_hipass", 1.5), ("fill_holes", "yes"), ("max_aspect", 0.5),
    ("min_size", 0), ("colour_match", -0.1), ("candidates", 0), ("region", "box"),
])
def test_the_conductor_checks_its_options_for_every_host(tiny, option, value):
    from pbe_core.options import OptionError

    host = HostParts(tiny, 1, guidance=5.0)
    with pytest.raises(OptionError, match=f"^{option} "):
        conduct_edit(host, scene(), box_mask(), exemplar(), **{option: value})
    assert host.jobs == [] and host.masked == []  # refused before any work
