"""One clip through a VAE: encode, optional latent noise over the whole clip, decode, measure.

The clip counterpart of ``pipeline.reconstruct``: ``vae.encode_clip`` (a video VAE's temporal path, or
an image VAE frame by frame, as the VAE decides), noise from ``noise.add_noise`` on the model-space
latent (C, T', h, w) as a whole, ``vae.decode_clip``, then ``metrics.clip_metrics`` (per-frame PSNR,
SSIM, MAE and the clip's flicker) of the decoded frames against the frames the VAE saw.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from vaestudio.core.metrics import ClipMetrics, clip_metrics, colorize, difference_map
from vaestudio.core.noise import NoiseResult, NoiseSpec, add_noise
from vaestudio.core.tiling import Progress, ShouldStop
from vaestudio.core.vae import Autoencoder, ClipDecoding, ClipEncoding
from vaestudio.core.video import Clip


@dataclass
class ClipReconstruction:
    """A clip encoded, possibly noised, decoded and measured against what the VAE saw."""

    encoded: ClipEncoding
    decoded: ClipDecoding
    metrics: ClipMetrics
    noise: NoiseResult | None = None
    notes: list[str] = field(default_factory=list)  # the clip's, the encoding's, then the decoding's

    @property
    def original(self) -> np.ndarray:
        """The frames the VAE was given (after trimming), (T, H, W, 3)."""
        return self.encoded.original[: len(self.decoded.frames)]

    def diff_frames(self) -> Iterator[np.ndarray]:
        """The difference of each frame as a heat map (as the image difference map, 0 to 0.25)."""
        for a, b in zip(self.original, self.decoded.frames, strict=True):
            yield colorize(difference_map(a, b))


def reconstruct_clip(vae: Autoencoder, clip: Clip, *, noise: NoiseSpec | None = None, tile: str = "auto",
                     progress: Progress | None = None, should_stop: ShouldStop | None = None) -> ClipReconstruction:
    """Encode ``clip``, optionally noise its latent in model space, decode it and measure every frame."""
    encoded = vae.encode_clip(clip.frames, tile=tile, progress=progress, should_stop=should_stop)
    latent, noised = encoded.latent, None
    if noise is not None:
        noised = add_noise(latent, vae.family, spec=noise)
        latent = noised.latent
    decoded = vae.decode_clip(latent, encoded.height, encoded.width, tile=tile, progress=progress,
                              should_stop=should_stop)
    n = len(decoded.frames)
    metrics = clip_metrics(encoded.original[:n], decoded.frames)
    notes = list(dict.fromkeys(clip.notes + encoded.notes + decoded.notes))
    return ClipReconstruction(encoded, decoded, metrics, noised, notes)
