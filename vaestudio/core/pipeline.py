"""One image through a VAE: encode, optional latent noise, decode, measure.

Used by the command line, the self-test and the GUI workers alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from vaestudio.core.images import LoadedImage
from vaestudio.core.metrics import Metrics, colorize, compute_metrics, difference_map
from vaestudio.core.noise import NoiseResult, add_noise
from vaestudio.core.tiling import Progress, ShouldStop
from vaestudio.core.vae import EncodeResult


@dataclass
class Reconstruction:
    image: LoadedImage
    original: np.ndarray  # what the VAE was given, as (H, W, 3): the image, or the 28x28 digit
    encoded: EncodeResult
    recon: np.ndarray  # (H, W, 3) float in [0, 1]
    metrics: Metrics
    encode_s: float
    decode_s: float
    noise: NoiseResult | None = None
    notices: list[str] = field(default_factory=list)

    @property
    def diff(self) -> np.ndarray:
        return difference_map(self.original, self.recon)

    def diff_rgb(self) -> np.ndarray:
        return colorize(self.diff)


def vae_input(vae, pixels: np.ndarray) -> np.ndarray:
    """What the VAE actually sees, to compare its output with: the image, or the 28x28 digit an
    MNIST VAE makes of it."""
    return vae.prepare_pixels(pixels)[0] if hasattr(vae, "prepare_pixels") else pixels


def reconstruct(vae, image: LoadedImage, *, noise: float | None = None, timestep: float | None = None,
                seed: int = 0, sample: bool = False, tile: str = "auto", with_lpips: bool = False,
                progress: Progress | None = None, should_stop: ShouldStop | None = None) -> Reconstruction:
    """Encode ``image``, optionally noise the latent, decode it, and compare with the original."""
    original = vae_input(vae, image.pixels)
    enc = vae.encode(image.pixels, sample=sample, seed=seed, tile=tile, progress=progress, should_stop=should_stop)
    latent = enc.latent
    noised = None
    if noise is not None or timestep is not None:
        noised = add_noise(latent, vae.family, strength=noise, timestep=timestep, seed=seed)
        latent = noised.latent
    t0 = time.perf_counter()
    recon = vae.decode(latent, enc.height, enc.width, tile=tile, progress=progress, should_stop=should_stop)
    decode_s = time.perf_counter() - t0
    metrics = compute_metrics(original, recon, with_lpips=with_lpips)
    notices = list(image.notices) + list(enc.notices) + list(vae.notices)
    return Reconstruction(image, original, enc, recon, metrics, enc.seconds, decode_s, noised, notices)
