"""Round-trip drift: encode and decode an image k times in a row, as repeated inpainting passes do.

After each round the picture is compared with the original: PSNR, SSIM and the colour shift (mean
reconstruction minus original, per R, G, B, in [0, 1] units). A VAE whose errors are random settles
(the loss of round 1 is not lost again), one with a systematic bias (a colour cast, a brightness
change) keeps drifting: with a constant bias b per round the colour shift after k rounds is k * b.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np

from vaestudio.core.analyses.about_drift import DEFAULT_ROUNDS
from vaestudio.core.analyses.common import Step, Steps
from vaestudio.core.metrics import color_shift, json_float, psnr, ssim
from vaestudio.core.tiling import Progress, ShouldStop
from vaestudio.core.vae import Autoencoder


@dataclass
class DriftRound:
    round: int
    psnr: float  # dB against the original (inf when identical)
    ssim: float
    color_shift: tuple[float, float, float]  # mean (round's picture - original) for R, G, B

    def to_dict(self) -> dict:
        return {"round": self.round, "psnr": json_float(self.psnr), "ssim": json_float(self.ssim),
                "color_shift": [json_float(v) for v in self.color_shift]}


@dataclass
class DriftResult:
    rounds: list[DriftRound]
    original: np.ndarray  # (H, W, 3): what the VAE was given
    last: np.ndarray  # (H, W, 3): the picture after the last round
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """``rounds``: a list of {round, psnr, ssim, color_shift} (psnr null: identical to the original)."""
        return {"rounds": [r.to_dict() for r in self.rounds]}


def run_drift(vae: Autoencoder, pixels: np.ndarray, *, rounds: int = DEFAULT_ROUNDS, tile: str = "auto",
              progress: Progress | None = None,
              should_stop: ShouldStop | None = None) -> Generator[Step | DriftResult, None, DriftResult]:
    """Encode and decode ``pixels`` ``rounds`` times in a row, measuring each round against the original.

    Parameters
    ----------
    vae : the autoencoder.
    pixels : (H, W, 3) float image in [0, 1].
    rounds : how many encode/decode rounds (at least 1).
    tile : "auto", "on" or "off", as for ``vae.encode``/``vae.decode``.

    Yields ``Step`` records, then the ``DriftResult`` (also returned).
    """
    if rounds < 1:
        raise ValueError("the number of rounds must be at least 1")
    steps = Steps(rounds, progress, should_stop)
    original, notes = vae.prepare_pixels(pixels)
    current = pixels
    out: list[DriftRound] = []
    for k in range(1, rounds + 1):
        yield steps.start(f"round {k} of {rounds}")
        enc = vae.encode(current, tile=tile, should_stop=should_stop)
        dec = vae.decode(enc.latent, enc.height, enc.width, tile=tile, should_stop=should_stop)
        current = dec.pixels
        notes.extend(n for n in enc.notes + dec.notes if n not in notes)
        out.append(DriftRound(k, psnr(original, current), ssim(original, current), color_shift(original, current)))
        steps.finish()
    result = DriftResult(out, original, current, notes)
    yield result
    return result
