"""Five analyses of what a VAE does beyond one PSNR number (issue 13).

Each analysis is one module with a plain generator function and a plot function:

============  ===================================  ==========================  ===========================
analysis      function (generator)                 result                      plot (RGB uint8 array)
============  ===================================  ==========================  ===========================
drift         ``drift.run_drift(vae, pixels)``     ``DriftResult``             ``drift.plot_drift``
seams         ``seams.run_seams(vae, pixels)``     ``SeamsResult``             ``seams.plot_seams``,
                                                                               ``seams.seam_maps``
spectrum      ``spectrum.run_spectrum(...)``       ``SpectrumResult``          ``spectrum.plot_spectrum``
noise         ``robustness.run_noise(...)``        ``NoiseResult``             ``robustness.plot_noise``
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
``scale.LatentStatsAccumulator``) follow ``common.Accumulator``::

    acc = SpectrumAccumulator(ref)  # or LatentStatsAccumulator(ref) / .for_vae(vae): the classes are factories
    acc.update(originals, reconstructions, raw_latents)   # torch (N,3,H,W) in [0,1], same, (N,C,h,w)
    state = acc.state()          # dict[str, torch.Tensor] of plain sums: reduce across ranks by adding
    acc.load_state(total)        # the reduced (or resumed) total
    numbers = acc.result()       # JSON-able dict (or acc.result(state) for a given state)
    fragment = acc.html()        # an HTML fragment (a table, the plot as an embedded PNG), None if empty

This is also the summing-accumulator interface of ``vaestudio.core.evaluate.accumulators``.

This package never imports Qt; plots are drawn with Pillow (``plotting``), not matplotlib.
"""

from __future__ import annotations

ANALYSES = ("drift", "seams", "spectrum", "noise", "scale")
