"""Round-trip drift: encode and decode an image k times in a row, as repeated inpainting passes do.

After each round the picture is compared with the original: PSNR, SSIM and the colour shift (mean
reconstruction minus original, per R, G, B, in [0, 1] units). A VAE whose errors are random settles
(the loss of round 1 is not lost again), one with a systematic bias (a colour cast, a brightness
change) keeps drifting: with a constant bias b per round the colour shift after k rounds is k * b.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import numpy as np

from vaestudio.core.analyses.common import Step, Steps
from vaestudio.core.analyses.plotting import GREY, Canvas, colour, limits
from vaestudio.core.autoencoder import Autoencoder
from vaestudio.core.metrics import json_float, psnr, ssim
from vaestudio.core.tiling import Progress, ShouldStop

DEFAULT_ROUNDS = 10


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
        current = vae.decode(enc.latent, enc.height, enc.width, tile=tile, should_stop=should_stop)
        notes.extend(n for n in list(enc.notes) + list(vae.notes) if n not in notes)
        diff = current.astype(np.float64) - original.astype(np.float64)
        shift = tuple(float(v) for v in diff.reshape(-1, 3).mean(axis=0))
        out.append(DriftRound(k, psnr(original, current), ssim(original, current), shift))
        steps.finish()
    result = DriftResult(out, original, current, notes)
    yield result
    return result


def plot_drift(results: Sequence[tuple[str, DriftResult]], *, width: int = 1040, height: int = 680) -> np.ndarray:
    """PSNR, SSIM and colour shift against the round, one colour per VAE; the pictures after the last round.

    ``results`` are (label, result) pairs; returns an (H, W, 3) uint8 image.
    """
    c = Canvas(width, height)
    hw, hh = width // 2, (height - 30) // 2
    c.text((width / 2, 6), "Round-trip drift: encode + decode repeated", size=15, anchor="mt")
    k_max = max((len(r.rounds) for _, r in results), default=1)
    xlim = (0.5, k_max + 0.5)
    xt = [k for k in range(1, k_max + 1) if k_max <= 12 or k % max(1, k_max // 10) == 0]
    ps = [d.psnr for _, r in results for d in r.rounds]
    ax = c.axes((0, 26, hw, 26 + hh), xlim=xlim, ylim=limits(ps), title="PSNR against the original",
                xlabel="round", ylabel="PSNR (dB)", xticks=xt)
    for i, (_, r) in enumerate(results):
        ax.line([d.round for d in r.rounds], [d.psnr for d in r.rounds], colour(i), markers=True)
    if ps and all(not np.isfinite(v) for v in ps):
        ax.note("identical to the original (PSNR infinite)")
    ss = [d.ssim for _, r in results for d in r.rounds]
    ax = c.axes((hw, 26, width, 26 + hh), xlim=xlim, ylim=limits(ss, include=[1.0]), title="SSIM against the original",
                xlabel="round", ylabel="SSIM", xticks=xt)
    for i, (_, r) in enumerate(results):
        ax.line([d.round for d in r.rounds], [d.ssim for d in r.rounds], colour(i), markers=True)
    cs = [v for _, r in results for d in r.rounds for v in d.color_shift]
    ax = c.axes((0, 26 + hh, hw, height), xlim=xlim, ylim=limits(cs, include=[0.0]),
                title="colour shift (R solid, G dashed, B dotted)", xlabel="round", ylabel="mean shift (0..1)",
                xticks=xt)
    ax.hline(0.0)
    for i, (_, r) in enumerate(results):
        for ch, dash in enumerate((0, 7, 2)):
            ax.line([d.round for d in r.rounds], [d.color_shift[ch] for d in r.rounds], colour(i), dash=dash)
    # legend, then the original and each VAE's last picture
    x0, y0 = hw + 20, 26 + hh + 10
    used = c.legend([(label, colour(i)) for i, (label, _) in enumerate(results)], (x0, y0))
    c.legend([("R", GREY), ("G", GREY), ("B", GREY)], (width - 80, y0), dashes=[0, 7, 2])
    pics = [("original", results[0][1].original)] if results else []
    pics += [(f"{label[-14:]}: round {len(r.rounds)}", r.last) for label, r in results]
    n = max(1, len(pics))
    box_w = min(150, (width - x0 - 10) // n - 8)
    box_h = max(40, height - (y0 + used + 10) - 22)
    x = x0
    for name, pic in pics:
        w, h = c.paste(pic, (x, y0 + used + 8), fit=(box_w, box_h))
        c.text((x, y0 + used + 12 + h), name, size=11)
        x += max(w, box_w) + 8
    return c.array()
