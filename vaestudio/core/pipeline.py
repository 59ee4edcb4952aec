"""One image through a VAE: encode, optional latent noise or channel ablation, decode, measure.

``vae.encode(pixels)`` gives an ``Encoding`` (``vaestudio.core.vae``); ``decode_latent`` is the one
function that turns it (possibly noised, possibly with a channel scaled) into a ``Reconstruction``:
the decoded image measured against what the VAE saw. ``reconstruct`` is encode + ``decode_latent``.
The command line, the self-test and the window's workers all use these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from vaestudio.core.images import LoadedImage
from vaestudio.core.metrics import Metrics, colorize, compute_metrics, difference_map
from vaestudio.core.noise import NoiseResult, NoiseSpec, add_noise
from vaestudio.core.tiling import Progress, ShouldStop
from vaestudio.core.vae import Autoencoder, Encoding


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
class Reconstruction:
    """An encoding decoded (noised or ablated, or as it was) and measured against what the VAE saw."""

    encoded: Encoding
    decoded: np.ndarray  # (H, W, 3) float in [0, 1]
    metrics: Metrics
    decode_s: float
    label: str  # what was decoded: "Reconstruction", "Noised: timestep 350", ...
    noise: NoiseResult | None = None
    ablation: Ablation | None = None
    notes: list[str] = field(default_factory=list)  # the encoding's, then the decoding's

    @property
    def original(self) -> np.ndarray:
        """What the VAE was given, (H, W, 3): the image, or e.g. the 28x28 digit of an MNIST VAE."""
        return self.encoded.original

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


def decode_latent(vae: Autoencoder, encoded: Encoding, *, noise: NoiseSpec | None = None,
                  ablation: Ablation | None = None, tile: str = "auto", with_lpips: bool = False,
                  progress: Progress | None = None, should_stop: ShouldStop | None = None) -> Reconstruction:
    """Decode an encoded image, noised in model space and/or with one channel scaled, and measure it."""
    latent = encoded.latent
    noised = None
    label = "Reconstruction"
    if noise is not None:
        noised = add_noise(latent, vae.family, spec=noise)
        latent = noised.latent
        label = f"Noised: {noise.describe()}"
    if ablation is not None:
        latent = ablate(vae, latent, ablation)
        label += f" ({ablation.describe()})"
    dec = vae.decode(latent, encoded.height, encoded.width, tile=tile, progress=progress, should_stop=should_stop)
    metrics = compute_metrics(encoded.original, dec.pixels, with_lpips=with_lpips)
    notes = list(dict.fromkeys(encoded.notes + dec.notes))
    return Reconstruction(encoded, dec.pixels, metrics, dec.seconds, label, noised, ablation, notes)


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
    encoded = vae.encode(image.pixels, sample=sample, seed=seed, tile=tile, progress=progress,
                         should_stop=should_stop)
    encoded.notes[:0] = image.notes
    return decode_latent(vae, encoded, noise=noise, tile=tile, with_lpips=with_lpips, progress=progress,
                         should_stop=should_stop)
