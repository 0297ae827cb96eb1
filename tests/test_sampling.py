"""pbe_core.sampling: schedule, timesteps, guidance and samplers, checked against diffusers and
against closed forms (a data distribution that is a single point)."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, PNDMScheduler

from pbe_core import sampling as S

SCHEDULE = S.scaled_linear_schedule()
SHAPE = (2, 4, 6, 6)
DIFFUSERS_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    steps_offset=1, timestep_spacing="leading", set_alpha_to_one=False,
)
MIXING = torch.linspace(-1, 1, 16).reshape(4, 4).T * 0.8


def toy_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Deterministic, nonlinear in x and dependent on t; keeps latents O(1) over a full run."""
    t = t.view(-1, 1, 1, 1)
    mixed = torch.einsum("oc,bchw->bohw", MIXING, x)
    return 0.9 * x + 0.3 * torch.tanh(mixed) * torch.cos(t / 300)


def point_eps_model(x0: torch.Tensor):
    """The exact eps of a data distribution concentrated at x0, for fractional t too (sigma is
    interpolated in log space between the discrete steps, as sigma_to_timestep assumes)."""
    log_sigmas = SCHEDULE.sigmas.double().log()

    def eps_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        low, high = t.double().floor().long(), t.double().ceil().long()
        frac = t.double() - low
        sigma = ((1 - frac) * log_sigmas[low] + frac * log_sigmas[high]).exp().view(-1, 1, 1, 1)
        alpha = 1 / (1 + sigma**2)
        return ((x - alpha.sqrt() * x0) / (1 - alpha).sqrt()).float()

    return eps_model


def noise(seed: int = 0) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


def run_diffusers(scheduler, steps: int, x: torch.Tensor, **step_options) -> torch.Tensor:
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        eps = toy_eps(x, t.float().expand(x.shape[0]))
        x = scheduler.step(eps, t, x, **step_options).prev_sample
    return x


# --- schedule and timesteps ------------------------------------------------------------------


def test_schedule_is_float64_cumprod_cast_to_float32():
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    expected = torch.from_numpy(np.cumprod(1 - betas)).float()
    assert SCHEDULE.alphas_cumprod.dtype == torch.float32
    assert torch.equal(SCHEDULE.alphas_cumprod, expected)
    diffusers_alphas = DDIMScheduler(**DIFFUSERS_CONFIG).alphas_cumprod
    torch.testing.assert_close(SCHEDULE.alphas_cumprod, diffusers_alphas, rtol=2e-5, atol=0)
    assert SCHEDULE.sigmas[0].item() == pytest.approx(0.02916, abs=1e-4)
    assert SCHEDULE.sigmas[-1].item() == pytest.approx(14.6146, abs=1e-3)
    assert bool((SCHEDULE.sigmas.diff() > 0).all())


def test_50_timesteps_are_981_down_to_1():
    assert S.ddim_timesteps(50) == list(range(981, 0, -20))


@pytest.mark.parametrize("steps", [1, 7, 30, 50, 333, 999])
def test_timesteps_equal_diffusers_leading_with_offset_1(steps):
    scheduler = DDIMScheduler(**DIFFUSERS_CONFIG)
    scheduler.set_timesteps(steps)
    assert S.ddim_timesteps(steps) == scheduler.timesteps.tolist()


@pytest.mark.parametrize("steps", [1, 10, 20, 25, 50, 100, 250])
def test_timesteps_equal_ldm_uniform_plus_1_when_steps_divide_1000(steps):
    ldm = [t + 1 for t in range(0, 1000, 1000 // steps)]
    assert S.ddim_timesteps(steps) == ldm[::-1]


def test_sigma_to_timestep_interpolates_in_log_sigma():
    sigmas = SCHEDULE.sigmas
    assert S.sigma_to_timestep(SCHEDULE, sigmas[[0, 500, 999]]).tolist() == pytest.approx(
        [0, 500, 999], abs=1e-3
    )
    between = (0.25 * sigmas[10].log() + 0.75 * sigmas[11].log()).exp()
    assert S.sigma_to_timestep(SCHEDULE, between.view(1)).item() == pytest.approx(10.75, abs=1e-3)
    outside = torch.tensor([1e-3, 100.0])
    assert S.sigma_to_timestep(SCHEDULE, outside).tolist() == [0.0, 999.0]


# --- guidance --------------------------------------------------------------------------------


class RecordingUnet:
    def __init__(self):
        self.calls = []

    def __call__(self, x_in, t, context):
        self.calls.append((x_in, t, context))
        # depends on the noisy latent, the concat channels and the context, so a mix-up shows
        context_term = context.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return x_in[:, :4] * 2 + x_in[:, 4:8] + x_in[:, 8:9] + context_term


def guidance_inputs():
    g = torch.Generator().manual_seed(1)
    concat = torch.randn(2, 5, 6, 6, generator=g)
    cond = torch.randn(2, 1, 768, generator=g)
    uncond = torch.randn(1, 1, 768, generator=g)
    return concat, cond, uncond


def test_guidance_runs_one_batch_uncond_first_and_combines():
    concat, cond, uncond = guidance_inputs()
    unet = RecordingUnet()
    x, t = noise(), torch.full((2,), 981.0)
    eps = S.guided_eps_model(unet, concat, cond, uncond, 5.0)(x, t)
    assert len(unet.calls) == 1
    x_in, t_in, context = unet.calls[0]
    assert x_in.shape == (4, 9, 6, 6) and t_in.tolist() == [981.0] * 4
    assert torch.equal(x_in[:2, :4], x) and torch.equal(x_in[2:, :4], x)
    assert torch.equal(x_in[:2, 4:], concat) and torch.equal(x_in[2:, 4:], concat)
    assert torch.equal(context[:2], uncond.expand(2, 1, 768)) and torch.equal(context[2:], cond)
    e_uncond = RecordingUnet()(torch.cat([x, concat], 1), t, uncond.expand(2, 1, 768))
    e_cond = RecordingUnet()(torch.cat([x, concat], 1), t, cond)
    torch.testing.assert_close(eps, e_uncond + 5.0 * (e_cond - e_uncond))


def test_guidance_scale_1_skips_the_uncond_half():
    concat, cond, uncond = guidance_inputs()
    unet = RecordingUnet()
    x, t = noise(), torch.full((2,), 1.0)
    eps = S.guided_eps_model(unet, concat, cond, uncond, 1.0)(x, t)
    assert len(unet.calls) == 1 and unet.calls[0][0].shape[0] == 2
    assert torch.equal(unet.calls[0][2], cond)
    torch.testing.assert_close(eps, RecordingUnet()(torch.cat([x, concat], 1), t, cond))


def test_guidance_rejects_wrong_concat_and_cond():
    concat, cond, uncond = guidance_inputs()
    with pytest.raises(ValueError, match="concat"):
        S.guided_eps_model(RecordingUnet(), concat[:, :4], cond, uncond, 5.0)
    with pytest.raises(ValueError, match="cond"):
        S.guided_eps_model(RecordingUnet(), concat, cond[:1], uncond, 5.0)


# --- samplers against diffusers --------------------------------------------------------------


@pytest.mark.parametrize("steps", [50, 7])
def test_ddim_eta0_matches_diffusers(steps):
    expected = run_diffusers(DDIMScheduler(**DIFFUSERS_CONFIG, clip_sample=False), steps, noise())
    actual = S.sample_ddim(toy_eps, noise(), SCHEDULE, steps)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_ddim_eta1_matches_diffusers_with_the_same_generator():
    scheduler = DDIMScheduler(**DIFFUSERS_CONFIG, clip_sample=False)
    generator = torch.Generator().manual_seed(7)
    expected = run_diffusers(scheduler, 50, noise(), eta=1.0, generator=generator)
    generator = torch.Generator().manual_seed(7)
    actual = S.sample_ddim(toy_eps, noise(), SCHEDULE, 50, eta=1.0, generator=generator)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(actual, S.sample_ddim(toy_eps, noise(), SCHEDULE, 50), atol=1e-2)


@pytest.mark.parametrize("steps", [50, 7, 2])
def test_plms_matches_diffusers_pndm_without_prk(steps):
    scheduler = PNDMScheduler(**DIFFUSERS_CONFIG, skip_prk_steps=True)
    expected = run_diffusers(scheduler, steps, noise())
    actual = S.sample_plms(toy_eps, noise(), SCHEDULE, steps)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_plms_warmup_evaluates_at_the_ddim_guess_of_the_next_timestep():
    calls = []

    def recording_eps(x, t):
        calls.append((x.clone(), t[0].item()))
        return toy_eps(x, t)

    S.sample_plms(recording_eps, noise(), SCHEDULE, 5)
    assert [t for _, t in calls] == [801, 601, 601, 401, 201, 1]
    alpha, alpha_next = SCHEDULE.alphas_cumprod[[801, 601]].tolist()
    guess = S._ddim_step(noise(), toy_eps(noise(), torch.full((2,), 801.0)), alpha, alpha_next)[0]
    torch.testing.assert_close(calls[1][0], guess)


@pytest.mark.parametrize(("euler", "eta"), [(S.sample_euler, 0.0), (S.sample_euler_a, 1.0)])
def test_euler_on_the_timestep_grid_tracks_ddim(euler, eta):
    """Euler (ancestral) in sigma space is DDIM with eta 0 (1) in x / sqrt(alpha): from the same
    start and generator every x0 prediction agrees; only the final step differs (to sigma 0, not
    to alphas_cumprod[0])."""
    x0_ddim, x0_euler = [], []
    S.sample_ddim(
        toy_eps, noise(), SCHEDULE, 20, eta=eta, generator=torch.Generator().manual_seed(4),
        callback=lambda i, n, x0: x0_ddim.append(x0),
    )
    sigma_max = SCHEDULE.sigmas[S.ddim_timesteps(20)[0]].item()
    start = noise() * math.sqrt(1 + sigma_max**2) / sigma_max
    final = euler(
        toy_eps, start, SCHEDULE, 20, generator=torch.Generator().manual_seed(4),
        callback=lambda i, n, x0: x0_euler.append(x0),
    )
    for ddim_x0, euler_x0 in zip(x0_ddim, x0_euler, strict=True):
        torch.testing.assert_close(euler_x0, ddim_x0, rtol=0, atol=1e-4)
    torch.testing.assert_close(final, x0_euler[-1])


def test_dpmpp_2m_converges_at_second_order():
    reference = S.sample_dpmpp_2m(toy_eps, noise(), SCHEDULE, 800)

    def error(sampler, steps):
        result = sampler(toy_eps, noise(), SCHEDULE, steps, sigma_spacing="karras")
        return (result - reference).abs().max()

    # halving the step size cuts a 2nd-order error about 4x (measured 4.6), a 1st-order one 2x
    assert error(S.sample_dpmpp_2m, 20) / error(S.sample_dpmpp_2m, 40) > 3.5
    assert error(S.sample_dpmpp_2m, 20) < 0.3 * error(S.sample_euler, 20)


# --- closed form: a single-point data distribution ---------------------------------------------


X0 = torch.linspace(-1.5, 1.5, math.prod(SHAPE)).reshape(SHAPE)


@pytest.mark.parametrize("name", ["ddim", "plms"])
def test_alpha_space_samplers_land_on_the_exact_noised_point(name):
    # With the exact eps, x_t = sqrt(a_t) x0 + sqrt(1 - a_t) n keeps the n it starts with
    # (a_t = alphas_cumprod[981] at the start) and the last step ends at a = alphas_cumprod[0].
    alpha_start, alpha_end = SCHEDULE.alphas_cumprod[[981, 0]].tolist()
    n = (noise() - math.sqrt(alpha_start) * X0) / math.sqrt(1 - alpha_start)
    expected = math.sqrt(alpha_end) * X0 + math.sqrt(1 - alpha_end) * n
    actual = S.sample(name, point_eps_model(X0), noise(), SCHEDULE, 50)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["euler", "euler_a", "dpmpp_2m"])
@pytest.mark.parametrize("steps", [50, 8])
def test_sigma_space_samplers_recover_the_point(name, steps):
    options = {"generator": torch.Generator().manual_seed(3)} if name == "euler_a" else {}
    actual = S.sample(name, point_eps_model(X0), noise(), SCHEDULE, steps, **options)
    torch.testing.assert_close(actual, X0, rtol=0, atol=1e-3)


# --- randomness, callbacks, errors -----------------------------------------------------------


def test_euler_a_without_noise_is_euler():
    options = dict(sigma_spacing="karras")
    expected = S.sample_euler(toy_eps, noise(), SCHEDULE, 12, **options)
    actual = S.sample_euler_a(toy_eps, noise(), SCHEDULE, 12, eta=0.0, **options)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_euler_a_keeps_the_noise_level_of_each_step():
    # For a single-point distribution the latent the model sees at step i must be x0 plus noise
    # of std sigma_i exactly: the step down and the fresh noise must add up to the next sigma.
    shape = (1, 4, 32, 32)
    x0 = torch.zeros(shape)
    exact_eps, seen = point_eps_model(x0), []

    def recording_eps(x, t):
        seen.append(x)
        return exact_eps(x, t)

    start = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    S.sample_euler_a(recording_eps, start, SCHEDULE, 10, generator=generator)
    sigmas = S.timestep_sigmas(SCHEDULE, 10)[:-1].tolist()
    for x_in, sigma in zip(seen, sigmas, strict=True):
        noise_std = (x_in * math.sqrt(1 + sigma**2)).std().item()
        assert noise_std == pytest.approx(sigma, rel=0.05)


def test_euler_a_is_reproducible_with_a_generator_and_varies_without():
    def run(seed):
        generator = torch.Generator().manual_seed(seed)
        return S.sample_euler_a(toy_eps, noise(), SCHEDULE, 10, generator=generator)

    assert torch.equal(run(5), run(5))
    assert (run(5) - run(6)).abs().max() > 1e-2


@pytest.mark.parametrize("name", list(S.SAMPLERS))
def test_callback_once_per_step_in_order(name):
    seen = []
    S.sample(name, toy_eps, noise(), SCHEDULE, 6, callback=lambda i, n, x0: seen.append((i, n, x0)))
    assert [(i, n) for i, n, _ in seen] == [(i, 6) for i in range(6)]
    assert all(x0.shape == SHAPE for _, _, x0 in seen)


def test_unknown_sampler_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: ddim, plms, euler, euler_a, dpmpp_2m"):
        S.sample("k_lms", toy_eps, noise(), SCHEDULE, 10)


@pytest.mark.parametrize("name", list(S.SAMPLERS))
@pytest.mark.parametrize("steps", [0, -3, 1000, 1001, 2.5, True])
def test_bad_step_counts_are_rejected(name, steps):
    with pytest.raises(ValueError, match="steps must be an integer from 1 to 999"):
        S.sample(name, toy_eps, noise(), SCHEDULE, steps)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="sigma_spacing"):
        S.sample_euler(toy_eps, noise(), SCHEDULE, 10, sigma_spacing="linear")
    with pytest.raises(ValueError, match="eta"):
        S.sample_ddim(toy_eps, noise(), SCHEDULE, 10, eta=-1.0)
