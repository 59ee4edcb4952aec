"""Noise in latent space: a plain strength, or the forward process of the family's schedule.

Noise always acts on the model-space latent (what the diffusion model sees):

- strength s: ``z + s * eps`` in model-space units;
- timestep t, SD1/SD2/SDXL: DDPM with scaled-linear betas 0.00085..0.012 over 1000 steps
  (diffusers' ``DDPMScheduler.add_noise``), t in 0..999;
- timestep t, flow-matching families (SD3, FLUX.1, FLUX.2, SANA, ...): rectified flow,
  ``z_t = (1 - sigma) z + sigma eps`` with sigma = t / 1000, t in 0..1000.

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
        else:
            abar = float(_ddpm_alphas_cumprod()[int(round(t))])
            a, b = math.sqrt(abar), math.sqrt(1.0 - abar)
    noisy = a * z + b * eps
    signal = a * a * float((z * z).mean())
    noise = b * b * float((eps * eps).mean())
    snr = math.inf if noise == 0 else signal / noise
    return NoiseResult(noisy, mode, value, a, b, snr)
