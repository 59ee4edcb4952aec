"""Spectrum: which spatial frequencies a VAE keeps, loses or invents.

The radially averaged power spectrum of the original and of the reconstruction, and their ratio,
per spatial frequency. Frequencies are in **cycles per pixel**, from 0 to 0.5 (the Nyquist limit: a
pattern that alternates every pixel); 0.25 is detail with a period of 4 pixels. A ratio of 1 means the
VAE keeps that frequency's energy; below 1 it loses it (blur), above 1 it adds energy that was not
there (invented texture, noise, ringing).

How: each channel has its mean removed and is multiplied by a 2-D Hann window (so the image edges do
not add false high frequencies), ``|FFT|^2 / sum(window^2)`` is averaged over R, G, B, and the power
is averaged over rings of equal radial frequency ``sqrt(fx^2 + fy^2)``: ring k (k = 1 .. ``bins``) is
centred on ``k * 0.5 / bins`` cycles per pixel and half a ring wide either side, so with ``bins`` = half the
image's shorter side each FFT frequency step is one ring (the constant term, and the corners beyond
0.5, are left out).

``SpectrumAccumulator`` averages the spectra over a dataset (the power per ring summed over images,
and how many images had that ring), so the ratio of the average spectra can be reduced across
processes.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np
import torch

from vaestudio.core.analyses.about_spectrum import ANALYSIS
from vaestudio.core.analyses.common import Step, Steps, as_tensor
from vaestudio.core.analyses.plotting import draw, png_base64
from vaestudio.core.tiling import Progress, ShouldStop
from vaestudio.core.vae import Autoencoder

#: Rings for dataset averages (images of different sizes share them).
DATASET_BINS = 64


def sig(x: float, digits: int = 6) -> float | None:
    """A float for JSON with ``digits`` significant digits (None for NaN/inf)."""
    return float(f"{x:.{digits}g}") if math.isfinite(x) else None


def radial_power(x: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Radially averaged power spectra of images.

    Parameters
    ----------
    x : (N, C, H, W) images (any range; the mean of each channel is removed).
    bins : number of rings; ring k (1..bins) is centred on ``k * 0.5 / bins`` cycles per pixel.

    Returns
    -------
    power : (N, bins) float64, the mean power in each ring averaged over channels (0 where the ring
        holds no frequency of this image size).
    counts : (bins,) how many FFT frequencies fell into each ring.
    """
    x = x.detach().to(torch.float64)
    _, _, h, w = x.shape
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    win = torch.outer(torch.hann_window(h, periodic=False, dtype=torch.float64),
                      torch.hann_window(w, periodic=False, dtype=torch.float64)) if min(h, w) > 2 else \
        torch.ones(h, w, dtype=torch.float64)
    spec = torch.fft.fft2(x * win)
    p = (spec.real**2 + spec.imag**2).mean(dim=1) / win.pow(2).sum()  # (N, H, W)
    fy = torch.fft.fftfreq(h, dtype=torch.float64)
    fx = torch.fft.fftfreq(w, dtype=torch.float64)
    r = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    ring = torch.round(r / 0.5 * bins).long()  # 0: the constant term
    valid = (ring >= 1) & (ring <= bins)
    idx_v = ring[valid] - 1
    counts = torch.bincount(idx_v, minlength=bins).to(torch.float64)
    sums = torch.zeros(p.shape[0], bins, dtype=torch.float64).index_add_(1, idx_v, p[:, valid])
    return sums / counts.clamp(min=1), counts


def bin_centres(bins: int) -> np.ndarray:
    """The frequency at the middle of each ring, cycles per pixel: 0.5/bins, 1/bins, ..., 0.5."""
    return (np.arange(bins) + 1) * 0.5 / bins


#: Below this power (an amplitude of a millionth, in 0..1 units) a frequency holds nothing to keep or lose:
#: the ratio there is undefined (a flat image has no power at all, and any reconstruction noise gave 1e23).
NO_POWER = 1e-12


def power_ratio(recon: np.ndarray, original: np.ndarray) -> np.ndarray:
    """recon / original per ring; NaN (undefined) where the original has no power (below ``NO_POWER``)."""
    recon, original = np.asarray(recon, dtype=np.float64), np.asarray(original, dtype=np.float64)
    out = np.full(original.shape, np.nan)
    ok = original >= NO_POWER
    out[ok] = recon[ok] / original[ok]
    return out


def undefined_note(ratio: np.ndarray) -> list[str]:
    """The note for ratios left undefined (blank), if any."""
    n = int(np.isnan(ratio).sum())
    if not n:
        return []
    return [f"the original has no power at {n} of {len(ratio)} frequencies (a flat image?): the power ratio "
            "there is undefined and left blank"]


@dataclass
class SpectrumResult:
    frequencies: np.ndarray  # cycles per pixel, the centre of each ring
    original_power: np.ndarray
    reconstruction_power: np.ndarray
    ratio: np.ndarray  # reconstruction_power / original_power
    reconstruction: np.ndarray | None = None  # (H, W, 3), absent for dataset averages
    images: int = 1
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """``frequencies`` (cycles/pixel) and ``ratio``, equal-length lists; the two spectra too."""
        return {"frequencies": [round(float(f), 6) for f in self.frequencies],
                "ratio": [sig(float(v)) for v in self.ratio],
                "original_power": [sig(float(v)) for v in self.original_power],
                "reconstruction_power": [sig(float(v)) for v in self.reconstruction_power]}

    @classmethod
    def from_dict(cls, d: dict) -> SpectrumResult:
        def arr(k: str) -> np.ndarray:
            return np.array([math.nan if v is None else v for v in d[k]], dtype=np.float64)

        return cls(arr("frequencies"), arr("original_power"), arr("reconstruction_power"), arr("ratio"),
                   images=int(d.get("images", 1)))


def spectrum_of(original: np.ndarray, reconstruction: np.ndarray, bins: int | None = None) -> SpectrumResult:
    """The spectra of two (H, W, 3) images and their ratio (``bins``: half the shorter side by default)."""
    h, w = original.shape[:2]
    bins = bins or max(4, min(h, w) // 2)
    p, counts = radial_power(torch.cat([as_tensor(original), as_tensor(reconstruction)]), bins)
    keep = (counts > 0).numpy()
    po, pr = p[0].numpy()[keep], p[1].numpy()[keep]
    ratio = power_ratio(pr, po)
    return SpectrumResult(bin_centres(bins)[keep], po, pr, ratio, reconstruction, notes=undefined_note(ratio))


def run_spectrum(vae: Autoencoder, pixels: np.ndarray, *, bins: int | None = None, tile: str = "auto",
                 progress: Progress | None = None,
                 should_stop: ShouldStop | None = None) -> Generator[Step | SpectrumResult, None, SpectrumResult]:
    """Reconstruct ``pixels`` and compare the power spectra (see the module docstring).

    ``bins``: rings between 0 and 0.5 cycles/pixel (default: half the shorter side, one FFT step each).
    Yields ``Step`` records, then the ``SpectrumResult`` (also returned).
    """
    steps = Steps(2, progress, should_stop)
    original, notes = vae.prepare_pixels(pixels)
    yield steps.start("encode")
    enc = vae.encode(pixels, tile=tile, should_stop=should_stop)
    steps.finish()
    yield steps.start("decode")
    recon = vae.decode(enc.latent, enc.height, enc.width, tile=tile, should_stop=should_stop).pixels
    steps.finish()
    result = spectrum_of(original, recon, bins)
    result.notes = notes + result.notes
    yield result
    return result


class SpectrumAccumulator:
    """The spectra averaged over a dataset (``common.Accumulator``): sums per ring, reduced by adding."""

    name = "spectrum"

    def __init__(self, ref: object | None = None, *, bins: int = DATASET_BINS) -> None:
        """``ref`` (an evaluation ``VaeRef``) names the VAE in the plot, so the class is an accumulator factory."""
        self.label = str(getattr(ref, "name", "") or "reconstruction")
        self.colour = int(getattr(ref, "index", 0) or 0)  # the VAE's colour in a report
        self.bins = bins
        self.original = torch.zeros(bins, dtype=torch.float64)
        self.reconstruction = torch.zeros(bins, dtype=torch.float64)
        self.images = torch.zeros(bins, dtype=torch.float64)

    def update(self, originals: torch.Tensor, reconstructions: torch.Tensor | None,
               raw_latents: torch.Tensor | None = None) -> None:
        """Add a batch: (N, 3, H, W) originals and their reconstructions (``raw_latents`` unused)."""
        if reconstructions is None:
            raise ValueError("the spectrum needs the reconstructions")
        p, counts = radial_power(torch.cat([originals.cpu(), reconstructions.cpu()]), self.bins)
        n = originals.shape[0]
        present = (counts > 0).to(torch.float64)
        self.original += p[:n].sum(0)
        self.reconstruction += p[n:].sum(0)
        self.images += present * n

    def state(self) -> dict[str, torch.Tensor]:
        return {"spectrum.original_power": self.original.clone(),
                "spectrum.reconstruction_power": self.reconstruction.clone(),
                "spectrum.images": self.images.clone()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.original = torch.as_tensor(state["spectrum.original_power"], dtype=torch.float64).clone()
        self.reconstruction = torch.as_tensor(state["spectrum.reconstruction_power"], dtype=torch.float64).clone()
        self.images = torch.as_tensor(state["spectrum.images"], dtype=torch.float64).clone()

    def result(self, state: dict[str, torch.Tensor] | None = None) -> dict:
        """The mean spectra and their ratio, as ``SpectrumResult.to_dict`` plus ``images``."""
        s = self.state() if state is None else state
        n = s["spectrum.images"].numpy()
        keep = n > 0
        po = s["spectrum.original_power"].numpy()[keep] / n[keep]
        pr = s["spectrum.reconstruction_power"].numpy()[keep] / n[keep]
        res = SpectrumResult(bin_centres(self.bins)[keep], po, pr, power_ratio(pr, po), images=int(n.max(initial=0)))
        return {**res.to_dict(), "images": res.images}

    def html(self, result: dict | None = None) -> str | None:
        """A short explanation, the plot as an embedded PNG, and the ratio at a few frequencies
        (``result`` defaults to ``self.result()``; None when no image was added)."""
        result = self.result() if result is None else result
        if not result.get("images"):
            return None
        res = SpectrumResult.from_dict(result)
        rows = []
        if len(res.frequencies):
            for f in (0.05, 0.1, 0.2, 0.3, 0.4, 0.49):
                i = int(np.argmin(np.abs(res.frequencies - f)))
                ratio = "" if math.isnan(res.ratio[i]) else f"{res.ratio[i]:.3f}"  # undefined: blank
                rows.append(f"<tr><td>{res.frequencies[i]:.3f}</td><td>{ratio}</td></tr>")
        return (
            '<section class="analysis spectrum"><h3>Spectrum</h3>'
            f"<p>Radially averaged power spectrum of the reconstructions against the originals, averaged over "
            f"{res.images} images. Ratio 1: the frequency is kept; below 1: lost (blur); above 1: added.</p>"
            f'<img alt="spectrum" src="data:image/png;base64,{png_base64(draw(ANALYSIS, [(self.label, result)], first_colour=self.colour))}">'
            "<table><tr><th>cycles/pixel</th><th>power ratio</th></tr>" + "".join(rows) + "</table></section>"
        )
