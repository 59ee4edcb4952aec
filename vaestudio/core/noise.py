"""Noise in latent space: a plain strength, or the forward process of the family's schedule.

Noise always acts on the model-space latent (what the diffusion model sees):

- strength s: ``z + s * eps`` in model-space units;
- timestep t, SD1/SD2/SDXL: DDPM with scaled-linear betas 0.00085..0.012 over 1000 steps
  (diffusers' ``DDPMScheduler.add_noise``), t in 0..999;
- timestep t, flow-matching families (SD3, FLUX.1, FLUX.2, SANA, ...): rectified flow,
  ``z_t = (1 - sigma) z + sigma eps`` with sigma = t / 1000, t in 0..1000;
- timestep t, EDM families (Playground v2.5, Cosmos 1.0): the Karras noise levels of diffusers'
  ``EDMDPMSolverMultistepScheduler`` / ``EDMEulerScheduler``: t in 0..1000 is the place on the ramp, sigma(0) = 0
  (clean), sigma(t) = (smin^(1/rho) + t/1000 (smax^(1/rho) - smin^(1/rho)))^rho, so t = 1000 is sigma_max. The
  scheduler's noisy latent is ``z + sigma eps`` (``add_noise``); what is decoded is that latent preconditioned as the
  denoiser's input, ``c_in (z + sigma eps)`` with ``c_in = 1 / sqrt(sigma^2 + sigma_data^2)``, times sigma_data to
  stay in the latent's units: ``z_t = a z + a sigma eps``, ``a = sigma_data / sqrt(sigma^2 + sigma_data^2)`` (t = 0
  is the latent itself; the signal-to-noise ratio is the scheduler's).

The noise is seeded; the signal-to-noise ratio is measured on the actual latent and noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import torch

from vaestudio.core.families import Family


@dataclass(frozen=True)
class NoiseSpec:
    """What noise to add: a strength, or a timestep of the family's schedule, with its seed."""

    mode: str  # "strength" or "timestep"
    value: float
    seed: int = 0

    def describe(self) -> str:
        return f"{self.mode} {self.value:.3g}"


@dataclass
class NoiseResult:
    latent: torch.Tensor
    mode: str  # "strength" or "timestep"
    value: float
    signal_coef: float
    noise_coef: float
    snr: float  # signal power / noise power, measured (inf when no noise)

    @property
    def snr_db(self) -> float:
        if self.snr == 0:
            return -math.inf
        return math.inf if math.isinf(self.snr) else 10.0 * math.log10(self.snr)


@cache
def _ddpm_alphas_cumprod() -> torch.Tensor:
    """Stable Diffusion's training schedule: scaled-linear betas 0.00085..0.012 over 1000 steps
    (what diffusers' DDPMScheduler computes; a test checks the two agree)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def edm_sigma(t: float, edm: tuple[float, float, float, float]) -> float:
    """The Karras noise level at timestep t (0..1000) of an EDM family's ``(sigma_min, sigma_max, sigma_data, rho)``;
    0 at t = 0."""
    smin, smax, _data, rho = edm
    if t <= 0:
        return 0.0
    lo, hi = smin ** (1.0 / rho), smax ** (1.0 / rho)
    return (lo + t / 1000.0 * (hi - lo)) ** rho


def noise_like(latent: torch.Tensor, seed: int) -> torch.Tensor:
    return torch.randn(latent.shape, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float32)


def add_noise(latent: torch.Tensor, family: Family, *, strength: float | None = None,
              timestep: float | None = None, seed: int = 0, eps: torch.Tensor | None = None,
              spec: NoiseSpec | None = None) -> NoiseResult:
    """Noise a model-space latent; exactly one of ``strength`` and ``timestep`` (or a ``spec``) is given."""
    if spec is not None:
        strength = spec.value if spec.mode == "strength" else None
        timestep = spec.value if spec.mode == "timestep" else None
        seed = spec.seed
    if (strength is None) == (timestep is None):
        raise ValueError("give either a noise strength or a timestep")
    z = latent.float()
    eps = noise_like(z, seed) if eps is None else eps.float()
    if strength is not None:
        if not math.isfinite(strength) or strength < 0:
            raise ValueError("noise strength must be a finite number >= 0")
        a, b, mode, value = 1.0, float(strength), "strength", float(strength)
    else:
        t = float(timestep)
        if not math.isfinite(t) or not 0 <= t <= family.max_timestep:
            raise ValueError(f"timestep must be between 0 and {family.max_timestep} for {family.name}")
        mode, value = "timestep", t
        if family.schedule == "flow":
            sigma = t / 1000.0
            a, b = 1.0 - sigma, sigma
        elif family.schedule == "edm":
            sigma, data = edm_sigma(t, family.edm), family.edm[2]
            a = data / math.sqrt(sigma * sigma + data * data)
            b = a * sigma
        else:
            abar = float(_ddpm_alphas_cumprod()[int(round(t))])
            a, b = math.sqrt(abar), math.sqrt(1.0 - abar)
    noisy = a * z + b * eps
    signal = a * a * float((z * z).mean())
    noise = b * b * float((eps * eps).mean())
    snr = math.inf if noise == 0 else signal / noise
    return NoiseResult(noisy, mode, value, a, b, snr)
