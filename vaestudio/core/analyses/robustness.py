"""Noise robustness: how the decoded picture degrades as noise is added to the latent.

The latent (in model space, as the diffusion model sees it) is noised with ``core.noise.add_noise``
at ``steps`` evenly spaced amounts, from none to the most the family's schedule has (timestep 0 to
999 for DDPM families, 0 to 1000 for flow-matching ones, where 1000 is pure noise), or from strength
0 to ``max_strength`` (``z + s * eps``). Each noised latent is decoded and compared with the **clean
reconstruction** (the decode of the un-noised latent), so the curve shows what noise does to
the decoder, apart from the VAE's own reconstruction error. The noise is seeded: every point, and
every VAE of the same latent shape, gets the same noise.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np

from vaestudio.core.analyses.about_noise import DEFAULT_STEPS
from vaestudio.core.analyses.common import Step, Steps
from vaestudio.core.metrics import json_float, psnr, ssim
from vaestudio.core.noise import add_noise, noise_like
from vaestudio.core.tiling import Progress, ShouldStop
from vaestudio.core.vae import Autoencoder


@dataclass
class NoisePoint:
    t: float  # the timestep, or the strength
    psnr: float  # against the clean reconstruction (inf: identical)
    ssim: float
    snr_db: float  # signal-to-noise ratio of the noised latent, measured

    def to_dict(self) -> dict:
        return {"t": self.t, "psnr": json_float(self.psnr), "ssim": json_float(self.ssim),
                "snr_db": json_float(self.snr_db)}


@dataclass
class RobustnessResult:
    mode: str  # "timestep" or "strength"
    points: list[NoisePoint]
    clean: np.ndarray  # (H, W, 3) the clean reconstruction
    schedule: str  # "ddpm", "flow" or "edm" (the family's), for timesteps
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """``points``: a list of {t, psnr, ssim} (and ``snr_db``); ``mode``: what ``t`` is."""
        return {"mode": self.mode, "schedule": self.schedule, "points": [p.to_dict() for p in self.points]}


def noise_amounts(mode: str, steps: int, max_value: float) -> list[float]:
    """``steps`` evenly spaced amounts from 0 to ``max_value`` (timesteps rounded to whole steps)."""
    if steps < 2:
        raise ValueError("at least 2 steps are needed")
    vals = np.linspace(0.0, max_value, steps)
    if mode == "timestep":
        return [float(round(v)) for v in vals]
    return [float(v) for v in vals]


def run_noise(vae: Autoencoder, pixels: np.ndarray, *, steps: int = DEFAULT_STEPS, mode: str = "timestep",
              max_strength: float = 1.0, seed: int = 0, tile: str = "auto", progress: Progress | None = None,
              should_stop: ShouldStop | None = None) -> Generator[Step | RobustnessResult, None, RobustnessResult]:
    """Decode the latent of ``pixels`` with increasing noise and compare with the clean reconstruction.

    Parameters
    ----------
    steps : number of points (at least 2), evenly spaced from no noise to the most.
    mode : "timestep" (over the family's schedule) or "strength" (0 to ``max_strength``).
    seed : the noise's seed (the same noise at every point).

    Yields ``Step`` records, then the ``RobustnessResult`` (also returned).
    """
    if mode not in ("timestep", "strength"):
        raise ValueError("mode must be 'timestep' or 'strength'")
    if mode == "strength" and not (math.isfinite(max_strength) and max_strength > 0):
        raise ValueError("the largest strength must be a finite number > 0")
    fam = vae.family
    amounts = noise_amounts(mode, steps, fam.max_timestep if mode == "timestep" else max_strength)
    st = Steps(2 + len(amounts), progress, should_stop)
    _, notes = vae.prepare_pixels(pixels)
    yield st.start("encode")
    enc = vae.encode(pixels, tile=tile, should_stop=should_stop)
    st.finish()
    yield st.start("clean decode")
    clean = vae.decode(enc.latent, enc.height, enc.width, tile=tile, should_stop=should_stop).pixels
    st.finish()
    eps = noise_like(enc.latent.float(), seed)
    points = []
    for a in amounts:
        yield st.start(f"decode with noise: {mode} {a:g}")
        kw = {"timestep": a} if mode == "timestep" else {"strength": a}
        noised = add_noise(enc.latent, fam, eps=eps, seed=seed, **kw)
        out = vae.decode(noised.latent, enc.height, enc.width, tile=tile, should_stop=should_stop).pixels
        points.append(NoisePoint(a, psnr(clean, out), ssim(clean, out), noised.snr_db))
        st.finish()
    result = RobustnessResult(mode, points, clean, fam.schedule, notes)
    yield result
    return result
