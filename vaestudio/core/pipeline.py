"""One image through a VAE: encode, optional latent noise or channel ablation, decode, measure.

``decode_latent`` is the one function that turns an encoded image (possibly noised, possibly with a
channel scaled) into a ``Reconstruction``; ``reconstruct`` is encode + ``decode_latent``. The
command line, the self-test, the evaluation and the window's workers all use these.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from vaestudio.core.autoencoder import Autoencoder, EncodeResult
from vaestudio.core.images import LoadedImage
from vaestudio.core.metrics import Metrics, colorize, compute_metrics, difference_map
from vaestudio.core.noise import NoiseResult, NoiseSpec, add_noise
from vaestudio.core.tiling import Progress, ShouldStop


@dataclass(frozen=True)
class Ablation:
    """Scale one latent channel before decoding (factor 0 zeroes it), in the raw or the model space."""

    channel: int
    factor: float
    space: str = "model"  # "model" or "raw"

    def describe(self) -> str:
        what = "zeroed" if self.factor == 0 else f"x {self.factor:g}"
        return f"{'raw ' if self.space == 'raw' else ''}channel {self.channel} {what}"


@dataclass
class Encoded:
    """An image encoded by one VAE, with the pixels it saw (to compare its output with)."""

    result: EncodeResult
    original: np.ndarray  # (H, W, 3): the image, or e.g. the 28x28 digit an MNIST VAE makes of it
    notes: list[str] = field(default_factory=list)


@dataclass
class Reconstruction:
    original: np.ndarray  # what the VAE was given, as (H, W, 3)
    encoded: EncodeResult
    decoded: np.ndarray  # (H, W, 3) float in [0, 1]
    metrics: Metrics
    decode_s: float
    label: str  # what was decoded: "Reconstruction", "Noised: timestep 350", ...
    noise: NoiseResult | None = None
    ablation: Ablation | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def encode_s(self) -> float:
        return self.encoded.seconds

    @cached_property
    def diff(self) -> np.ndarray:
        """Per-pixel mean absolute error over RGB, (H, W)."""
        return difference_map(self.original, self.decoded)

    @cached_property
    def diff_rgb(self) -> np.ndarray:
        """The difference as a heat map image (0 to 0.25)."""
        return colorize(self.diff)


def encode_image(vae: Autoencoder, pixels: np.ndarray, *, sample: bool = False, seed: int = 0, tile: str = "auto",
                 progress: Progress | None = None, should_stop: ShouldStop | None = None) -> Encoded:
    original, notes = vae.prepare_pixels(pixels)
    enc = vae.encode(pixels, sample=sample, seed=seed, tile=tile, progress=progress, should_stop=should_stop)
    return Encoded(enc, original, list(dict.fromkeys(notes + enc.notes)))


def decode_latent(vae: Autoencoder, encoded: Encoded, *, noise: NoiseSpec | None = None,
                  ablation: Ablation | None = None, tile: str = "auto", with_lpips: bool = False,
                  progress: Progress | None = None, should_stop: ShouldStop | None = None) -> Reconstruction:
    """Decode an encoded image, noised in model space and/or with one channel scaled, and measure it."""
    enc = encoded.result
    latent = enc.latent
    noised = None
    label = "Reconstruction"
    if noise is not None:
        noised = add_noise(latent, vae.family, spec=noise)
        latent = noised.latent
        label = f"Noised: {noise.describe()}"
    if ablation is not None:
        latent = ablate(vae, latent, ablation)
        label += f" ({ablation.describe()})"
    t0 = time.perf_counter()
    decoded = vae.decode(latent, enc.height, enc.width, tile=tile, progress=progress, should_stop=should_stop)
    decode_s = time.perf_counter() - t0
    metrics = compute_metrics(encoded.original, decoded, with_lpips=with_lpips)
    notes = list(encoded.notes) + list(vae.notes)
    return Reconstruction(encoded.original, enc, decoded, metrics, decode_s, label, noised, ablation, notes)


def ablate(vae: Autoencoder, latent, ablation: Ablation):
    if ablation.space == "raw":
        raw = vae.from_model(latent.float()).clone()
        raw[ablation.channel] *= ablation.factor
        return vae.to_model(raw)
    z = latent.clone()
    z[ablation.channel] *= ablation.factor
    return z


def reconstruct(vae: Autoencoder, image: LoadedImage, *, noise: NoiseSpec | None = None, seed: int = 0,
                sample: bool = False, tile: str = "auto", with_lpips: bool = False,
                progress: Progress | None = None, should_stop: ShouldStop | None = None) -> Reconstruction:
    """Encode ``image``, optionally noise the latent, decode it, and compare with the original."""
    encoded = encode_image(vae, image.pixels, sample=sample, seed=seed, tile=tile, progress=progress,
                           should_stop=should_stop)
    encoded.notes[:0] = image.notes
    return decode_latent(vae, encoded, noise=noise, tile=tile, with_lpips=with_lpips, progress=progress,
                         should_stop=should_stop)
