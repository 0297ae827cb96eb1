"""Noise schedule, classifier-free guidance and samplers for Paint by Example (SD 1.x, eps).

Every sampler is a short function of the same shape:

    sample_<name>(eps_model, noise, schedule, steps, *, generator=None, callback=None, **options)

`eps_model(x, timestep)` predicts the noise in `x`; `timestep` is a float tensor of shape (B,) in
DDPM units (0..999), fractional for the sigma-space samplers. `noise` is unit-variance; DDIM and
PLMS start at it, the sigma-space samplers at `noise * sigma_max`. `callback(step_index,
total_steps, x0_prediction)` is called once per step. The result is the final latent.

Timesteps follow the reference (ldm "uniform" + 1, = diffusers "leading" with steps_offset 1):
50 steps run 981, 961, ..., 1. The last DDIM/PLMS step lands on alphas_cumprod[0], not on 1.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

EpsModel = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[int, int, Tensor], None]


@dataclass(frozen=True, eq=False)
class Schedule:
    """A discrete DDPM schedule; index t is the DDPM timestep."""

    betas: Tensor  # float32, computed in float64 as ldm does
    alphas_cumprod: Tensor  # float32, the cumulative product taken in float64
    sigmas: Tensor  # float32, sqrt((1 - a) / a): noise level of k-diffusion's x / sqrt(a)

    @property
    def num_train_steps(self) -> int:
        return self.alphas_cumprod.shape[0]


def scaled_linear_schedule(
    num_train_steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
) -> Schedule:
    """The SD 1.x / Paint by Example schedule: betas linear in sqrt space."""
    sqrt_betas = torch.linspace(
        beta_start**0.5, beta_end**0.5, num_train_steps, dtype=torch.float64
    )
    betas = sqrt_betas**2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0).float()
    sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    return Schedule(betas.float(), alphas_cumprod, sigmas)


def _check_steps(steps: int, num_train_steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps < num_train_steps:
        raise ValueError(
            f"steps must be an integer from 1 to {num_train_steps - 1} (the +1 timestep offset "
            f"leaves {num_train_steps - 1} usable steps), got {steps!r}"
        )


def ddim_timesteps(steps: int, num_train_steps: int = 1000) -> list[int]:
    """Descending timesteps, evenly spaced by num_train_steps // steps, offset by 1.

    For step counts that divide 1000 this is exactly ldm's make_ddim_timesteps("uniform"); for
    others ldm yields an extra step (30 -> 31 timesteps) while this, like diffusers, yields `steps`.
    """
    _check_steps(steps, num_train_steps)
    stride = num_train_steps // steps
    return [i * stride + 1 for i in reversed(range(steps))]


def sigma_to_timestep(schedule: Schedule, sigma: Tensor) -> Tensor:
    """Fractional DDPM timestep of each sigma, linear in log-sigma between discrete steps
    (k-diffusion's DiscreteSchedule.sigma_to_t; clamped to 0..num_train_steps - 1)."""
    log_sigmas = schedule.sigmas.log()
    log_sigma = sigma.to(log_sigmas).log()
    low = (torch.searchsorted(log_sigmas, log_sigma, right=True) - 1).clamp(0, len(log_sigmas) - 2)
    weight = (log_sigma - log_sigmas[low]) / (log_sigmas[low + 1] - log_sigmas[low])
    return low + weight.clamp(0, 1)


def karras_sigmas(schedule: Schedule, steps: int, rho: float = 7.0) -> Tensor:
    """Karras et al. (2022) noise levels between the schedule's extreme sigmas, then 0."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    inv_max, inv_min = (float(s) ** (1 / rho) for s in (schedule.sigmas[-1], schedule.sigmas[0]))
    sigmas = (inv_max + ramp * (inv_min - inv_max)) ** rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])


def timestep_sigmas(schedule: Schedule, steps: int) -> Tensor:
    """The discrete sigmas at the DDIM timesteps (same grid as `steps` DDIM steps), then 0."""
    sigmas = schedule.sigmas[ddim_timesteps(steps, schedule.num_train_steps)].double()
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])


def guided_eps_model(
    unet_fn: Callable[[Tensor, Tensor, Tensor], Tensor],
    concat: Tensor,
    cond: Tensor,
    uncond: Tensor,
    scale: float,
) -> EpsModel:
    """Classifier-free guidance over the 9-channel UNet: input [x, masked-image latent, keep-mask].

    Both halves run as one batch, unconditional first: eps = e_u + scale * (e_c - e_u). With
    scale == 1 the unconditional half is skipped. `uncond` (1 or B, 1, 768) is broadcast to `cond`.
    """
    if concat.ndim != 4 or concat.shape[1] != 5:
        raise ValueError(
            "concat must be (B, 5, h, w): masked-image latent (4) + keep-mask (1), "
            f"got {tuple(concat.shape)}"
        )
    if cond.ndim != 3 or cond.shape[0] != concat.shape[0]:
        raise ValueError(
            f"cond must be (B, tokens, dim) with B = concat's batch {concat.shape[0]}, "
            f"got {tuple(cond.shape)}"
        )
    if scale == 1:
        return lambda x, t: unet_fn(torch.cat([x, concat], dim=1), t, cond)
    context = torch.cat([uncond.expand_as(cond), cond])
    concat_pair = torch.cat([concat, concat])

    def eps_model(x: Tensor, t: Tensor) -> Tensor:
        x_in = torch.cat([torch.cat([x, x]), concat_pair], dim=1)
        eps_uncond, eps_cond = unet_fn(x_in, torch.cat([t, t]), context).chunk(2)
        return eps_uncond + scale * (eps_cond - eps_uncond)

    return eps_model


def _timestep_batch(t: float, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), float(t), dtype=torch.float32, device=x.device)


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    # Draw on the generator's device, as diffusers' randn_tensor does, so seeds carry over.
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def _alpha_pairs(schedule: Schedule, steps: int) -> list[tuple[int, float, float]]:
    """(timestep, alpha_t, alpha_prev) per step; the last step's alpha_prev is alphas_cumprod[0]."""
    timesteps = ddim_timesteps(steps, schedule.num_train_steps)
    alphas = schedule.alphas_cumprod
    prev = [float(alphas[t]) for t in timesteps[1:]] + [float(alphas[0])]
    return [(t, float(alphas[t]), a_prev) for t, a_prev in zip(timesteps, prev, strict=True)]


def _ddim_step(
    x: Tensor, eps: Tensor, alpha: float, alpha_prev: float, noise_std: float = 0.0
) -> tuple[Tensor, Tensor]:
    """DDIM update before its fresh noise (of std noise_std) is added: (x_prev, x0_prediction)."""
    x0 = (x - (1 - alpha) ** 0.5 * eps) / alpha**0.5
    return alpha_prev**0.5 * x0 + (1 - alpha_prev - noise_std**2) ** 0.5 * eps, x0


def sample_ddim(
    eps_model: EpsModel, noise: Tensor, schedule: Schedule, steps: int, *,
    generator: torch.Generator | None = None, callback: Callback | None = None, eta: float = 0.0,
) -> Tensor:
    """DDIM (Song et al. 2020); eta 0 is deterministic, eta 1 is DDPM-like.

    For eta > 0 the noise is drawn once per step with `generator`, in diffusers' order and shape.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    pairs = _alpha_pairs(schedule, steps)
    x = noise
    for i, (t, alpha, alpha_prev) in enumerate(pairs):
        eps = eps_model(x, _timestep_batch(t, x))
        std = eta * ((1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev)) ** 0.5
        x, x0 = _ddim_step(x, eps, alpha, alpha_prev, std)
        if eta > 0:  # one draw per step, as diffusers does, so seeds carry over
            x = x + std * _randn_like(x, generator)
        if callback is not None:
            callback(i, steps, x0)
    return x


# Adams-Bashforth weights for [eps_now, eps_1_ago, eps_2_ago, eps_3_ago], by history length.
_ADAMS_BASHFORTH = {1: (3 / 2, -1 / 2), 2: (23 / 12, -16 / 12, 5 / 12),
                    3: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def sample_plms(
    eps_model: EpsModel, noise: Tensor, schedule: Schedule, steps: int, *,
    generator: torch.Generator | None = None, callback: Callback | None = None,
) -> Tensor:
    """PLMS (Liu et al. 2022) as ldm's PLMSSampler runs it (steps + 1 model evaluations).

    Step 1 is a pseudo improved Euler step (eps averaged with eps at the DDIM guess for the next
    timestep); later steps combine the last raw eps values by 2nd-4th order Adams-Bashforth.
    diffusers' PNDMScheduler(skip_prk_steps=True) is the same computation with its warm-up
    spread over a repeated timestep; the two differ only at steps == 1, where diffusers takes a
    single DDIM step. `generator` is unused (PLMS is deterministic).
    """
    pairs = _alpha_pairs(schedule, steps)
    x, history = noise, []  # history: raw eps of earlier steps, newest first
    for i, (t, alpha, alpha_prev) in enumerate(pairs):
        eps = eps_model(x, _timestep_batch(t, x))
        if not history:
            x_guess, _ = _ddim_step(x, eps, alpha, alpha_prev)
            t_next = pairs[min(i + 1, steps - 1)][0]
            eps_step = (eps + eps_model(x_guess, _timestep_batch(t_next, x))) / 2
        else:
            weights = _ADAMS_BASHFORTH[len(history)]
            eps_step = sum(w * e for w, e in zip(weights, [eps, *history], strict=True))
        x, x0 = _ddim_step(x, eps_step, alpha, alpha_prev)
        history = [eps, *history][:3]
        if callback is not None:
            callback(i, steps, x0)
    return x


_SIGMA_SPACINGS = {"timesteps": timestep_sigmas, "karras": karras_sigmas}


def _sigma_space(
    eps_model: EpsModel, schedule: Schedule, steps: int, spacing: str
) -> tuple[Callable[[Tensor, int], Tensor], list[float]]:
    """The sigma grid (ending in 0) and the denoiser on it,
    D(x, i) = x - sigma_i * eps(x / sqrt(1 + sigma_i^2), t(sigma_i))."""
    if spacing not in _SIGMA_SPACINGS:
        raise ValueError(f"sigma_spacing must be one of {sorted(_SIGMA_SPACINGS)}, got {spacing!r}")
    _check_steps(steps, schedule.num_train_steps)
    sigmas = _SIGMA_SPACINGS[spacing](schedule, steps)
    timesteps = sigma_to_timestep(schedule, sigmas[:-1].float()).tolist()

    def denoise(x: Tensor, i: int) -> Tensor:
        sigma = float(sigmas[i])
        return x - sigma * eps_model(x / (1 + sigma**2) ** 0.5, _timestep_batch(timesteps[i], x))

    return denoise, sigmas.tolist()




def sample_euler(
    eps_model: EpsModel, noise: Tensor, schedule: Schedule, steps: int, *,
    generator: torch.Generator | None = None, callback: Callback | None = None,
    sigma_spacing: str = "timesteps",
) -> Tensor:
    """Euler steps of the probability-flow ODE in sigma space (Karras et al. 2022, Alg. 2 without
    churn). On the default grid each step but the last equals a DDIM eta=0 step; the last goes to
    sigma 0 instead of alphas_cumprod[0]. `generator` is unused."""
    denoise, sigmas = _sigma_space(eps_model, schedule, steps, sigma_spacing)
    x = noise * sigmas[0]
    for i in range(steps):
        denoised = denoise(x, i)
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
        if callback is not None:
            callback(i, steps, denoised)
    return x


def sample_euler_a(
    eps_model: EpsModel, noise: Tensor, schedule: Schedule, steps: int, *,
    generator: torch.Generator | None = None, callback: Callback | None = None,
    sigma_spacing: str = "timesteps", eta: float = 1.0,
) -> Tensor:
    """Euler ancestral: an Euler step down to sigma_down, then fresh noise up to the next sigma."""
    denoise, sigmas = _sigma_space(eps_model, schedule, steps, sigma_spacing)
    x = noise * sigmas[0]
    for i in range(steps):
        denoised = denoise(x, i)
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        sigma_up = min(sigma_next, eta * sigma_next * (1 - sigma_next**2 / sigma**2) ** 0.5)
        sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
        x = x + (x - denoised) / sigma * (sigma_down - sigma)
        if sigma_next > 0:
            x = x + sigma_up * _randn_like(x, generator)
        if callback is not None:
            callback(i, steps, denoised)
    return x


def sample_dpmpp_2m(
    eps_model: EpsModel, noise: Tensor, schedule: Schedule, steps: int, *,
    generator: torch.Generator | None = None, callback: Callback | None = None,
    sigma_spacing: str = "karras",
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), by default on Karras sigmas (rho 7) between the
    schedule's sigma_min and sigma_max. `generator` is unused."""
    denoise, sigmas = _sigma_space(eps_model, schedule, steps, sigma_spacing)
    x, previous = noise * sigmas[0], None
    for i in range(steps):
        denoised = denoise(x, i)
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        if sigma_next == 0:
            x = denoised
        else:
            estimate = denoised
            if previous is not None:
                # second order: extrapolate the denoised value linearly in log-sigma
                half_ratio = math.log(sigma / sigma_next) / math.log(sigmas[i - 1] / sigma) / 2
                estimate = (1 + half_ratio) * denoised - half_ratio * previous
            x = sigma_next / sigma * x + (1 - sigma_next / sigma) * estimate
        previous = denoised
        if callback is not None:
            callback(i, steps, denoised)
    return x


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddim": sample_ddim,
    "plms": sample_plms,
    "euler": sample_euler,
    "euler_a": sample_euler_a,
    "dpmpp_2m": sample_dpmpp_2m,
}


def sample(
    name: str, eps_model: EpsModel, noise: Tensor, schedule: Schedule, steps: int, **options
) -> Tensor:
    """Run the sampler called `name` (a key of SAMPLERS) with its keyword options."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid names: {', '.join(SAMPLERS)}")
    return SAMPLERS[name](eps_model, noise, schedule, steps, **options)
