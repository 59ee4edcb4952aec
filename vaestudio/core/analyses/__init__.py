"""Five analyses of what a VAE does beyond one PSNR number (issue 13).

Each analysis is one module with a plain generator function and a plot function:

============  ===================================  ==========================  ===========================
analysis      function (generator)                 result                      plot (RGB uint8 array)
============  ===================================  ==========================  ===========================
drift         ``drift.run_drift(vae, pixels)``     ``DriftResult``             ``drift.plot_drift``
seams         ``seams.run_seams(vae, pixels)``     ``SeamsResult``             ``seams.plot_seams``,
                                                                               ``seams.seam_maps``
spectrum      ``spectrum.run_spectrum(...)``       ``SpectrumResult``          ``spectrum.plot_spectrum``
noise         ``robustness.run_noise(...)``        ``RobustnessResult``        ``robustness.plot_noise``
scale         ``scale.run_scale(vae, pixels)``     ``ScaleResult``             ``scale.plot_scale``
============  ===================================  ==========================  ===========================

**The generator protocol.** Every ``run_*`` function takes the VAE, the image as an (H, W, 3) float
array in [0, 1] and keyword options, plus ``progress`` (an optional ``(done, total)`` callback) and
``should_stop`` (an optional callable; when it returns True the analysis raises
``vaestudio.core.errors.Cancelled``: it is checked between steps and passed to ``vae.encode`` /
``vae.decode``, which check it before every block, so even a long decode stops within about a
second). It yields ``Step(done, total, what)`` records, and finally the typed result, which is
also the generator's return value (``common.drive`` runs one to its result). Results are
dataclasses whose ``to_dict()`` gives the JSON fields of the issue (``rounds``, ``seams``,
``frequencies``/``ratio``, ``points``, ``mean``/``std``/``suggested_*``/``configured_*``) plus a few
documented extras; they also keep the arrays the window shows (the last drift picture, seam maps).

**Accumulators** for dataset-wide numbers (``spectrum.SpectrumAccumulator``,
``scale.LatentStatsAccumulator``) follow the summing-accumulator interface of
``vaestudio.core.evaluate.accumulators``::

    acc = SpectrumAccumulator(ref)  # or LatentStatsAccumulator(ref) / .for_vae(vae): the classes are factories
    acc.update(originals, reconstructions, raw_latents)   # torch (N,3,H,W) in [0,1], same, (N,C,h,w)
    state = acc.state()          # dict[str, torch.Tensor] of plain sums: reduce across ranks by adding
    acc.load_state(total)        # the reduced (or resumed) total
    numbers = acc.result()       # JSON-able dict (or acc.result(state) for a given state)
    fragment = acc.html()        # an HTML fragment (a table, the plot as an embedded PNG), None if empty

This package never imports Qt; plots are drawn with Pillow (``plotting``), not matplotlib.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Analysis:
    """One analysis: its name, what it answers, and where its generator and plot live."""

    name: str
    title: str
    question: str  # what it answers, in the user's words
    module: str
    run: str
    plot: str

    def functions(self):
        """(run, plot): the generator function and the plot function (imports torch)."""
        mod = importlib.import_module(f"vaestudio.core.analyses.{self.module}")
        return getattr(mod, self.run), getattr(mod, self.plot)


#: The five analyses, in the order the CLI and the window list them.
ANALYSES: dict[str, Analysis] = {a.name: a for a in (
    Analysis("drift", "Round-trip drift",
             "Encode and decode again and again: do colours drift and detail fade, as after repeated inpainting "
             "passes? PSNR, SSIM and colour shift after each round.", "drift", "run_drift", "plot_drift"),
    Analysis("seams", "Tile seams",
             "Decode in tiles and whole: where tiles meet, is the error larger? A seam score per tile size and "
             "overlap, to pick settings that hide seams.", "seams", "run_seams", "plot_seams"),
    Analysis("spectrum", "Spectrum",
             "Which spatial frequencies does the VAE keep, lose (ratio < 1) or invent (> 1)? The radially "
             "averaged power spectrum of original and reconstruction.", "spectrum", "run_spectrum", "plot_spectrum"),
    Analysis("noise", "Noise robustness",
             "How fast does the picture degrade as latent noise grows along the family's schedule (or as a "
             "strength)? PSNR and SSIM against the clean reconstruction.", "robustness", "run_noise", "plot_noise"),
    Analysis("scale", "Scaling factor",
             "Do the latents have unit variance in model space? Their mean and std, the factor and shift that "
             "would normalise them, and a warning when the configured factor is far off.", "scale", "run_scale",
             "plot_scale"),
)}


def parse_sizes(text: str) -> list[int]:
    """Pixel sizes typed as "64, 128" (tile sizes, overlaps) as whole numbers >= 0.

    Raises ValueError with a sentence to show when the text is not that.
    """
    try:
        values = [int(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 0 for v in values):
        raise ValueError(f"expected whole numbers >= 0 separated by commas (e.g. 64, 128), got '{text}'")
    return values


def check_seam_settings(tiles: list[int], overlaps: list[int]) -> None:
    """At least one overlap must be smaller than one tile, or there is nothing to measure."""
    if not any(o < t for t in tiles for o in overlaps):
        raise ValueError("every overlap is as large as every tile: an overlap must be smaller than the tile")
