"""Five analyses of what a VAE does beyond one PSNR number (issue 13), each described once (issue 16).

Each analysis is two modules: the computation (a generator function and its typed result; it imports
torch) and its description, ``about_<name>.py`` (an ``describe.Analysis``: options, table, summary
line, figure, pictures; no torch, no numpy). The CLI (``vaestudio analyze``) and the window's
Analysis tab are made from the descriptions and never name an analysis:

============  ==================  =====================================  ========================
analysis      description         generator (``Analysis.run``)           result
============  ==================  =====================================  ========================
drift         ``about_drift``     ``drift.run_drift(vae, pixels)``       ``DriftResult``
seams         ``about_seams``     ``seams.run_seams(vae, pixels)``       ``SeamsResult``
spectrum      ``about_spectrum``  ``spectrum.run_spectrum(vae, pixels)`` ``SpectrumResult``
noise         ``about_noise``     ``robustness.run_noise(vae, pixels)``  ``RobustnessResult``
scale         ``about_scale``     ``scale.run_scale(vae, pixels)``       ``ScaleResult``
============  ==================  =====================================  ========================

**The generator protocol.** Every ``run_*`` function takes the VAE, the image as an (H, W, 3) float
array in [0, 1] and keyword options (the description's ``options``), plus ``progress`` (an optional
``(done, total)`` callback) and ``should_stop`` (an optional callable; when it returns True the
analysis raises ``vaestudio.core.errors.Cancelled``: it is checked between steps and passed to
``vae.encode`` / ``vae.decode``, which check it before every block, so even a long decode stops
within about a second). It yields ``Step(done, total, what)`` records, and finally the typed result,
which is also the generator's return value (``common.drive`` runs one to its result). Results are
dataclasses whose ``to_dict()`` gives the JSON fields (``rounds``, ``seams``, ``frequencies``/``ratio``,
``points``, ``mean``/``std``/``suggested_*``/``configured_*``) plus a few documented extras; the
description's table, summary and figure are made from that dict; its pictures from the result, which
keeps the arrays (the last drift picture, seam maps).

**Accumulators** for dataset-wide numbers (``spectrum.SpectrumAccumulator``,
``scale.LatentStatsAccumulator``) follow the summing-accumulator interface of
``vaestudio.core.evaluate.accumulators``::

    acc = SpectrumAccumulator(ref)  # or LatentStatsAccumulator(ref) / .for_vae(vae): the classes are factories
    acc.update(originals, reconstructions, raw_latents)   # torch (N,3,H,W) in [0,1], same, (N,C,h,w)
    state = acc.state()          # dict[str, torch.Tensor] of plain sums: reduce across ranks by adding
    acc.load_state(total)        # the reduced (or resumed) total
    numbers = acc.result()       # JSON-able dict (or acc.result(state) for a given state)
    fragment = acc.html()        # an HTML fragment (a table, the plot as an embedded PNG), None if empty

This package never imports Qt; the PNGs are drawn with Pillow (``plotting.draw_figure``), not matplotlib.

**Adding an analysis**: its computation module, its ``about_<name>.py`` with ``ANALYSIS``, one line
below, and its tests; the CLI subcommand, the window's option page, table and plots follow.
"""

from __future__ import annotations

from vaestudio.core.analyses import about_drift, about_noise, about_scale, about_seams, about_spectrum
from vaestudio.core.analyses.describe import Analysis

#: The five analyses, in the order the CLI and the window list them.
ANALYSES: dict[str, Analysis] = {m.ANALYSIS.name: m.ANALYSIS for m in (
    about_drift, about_seams, about_spectrum, about_noise, about_scale)}
