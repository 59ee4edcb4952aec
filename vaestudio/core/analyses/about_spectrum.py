"""The spectrum, described for the CLI and the window (the computation: ``spectrum.py``)."""

from __future__ import annotations

from vaestudio.core.analyses.describe import (
    Analysis,
    Chart,
    Column,
    Figure,
    Labelled,
    Option,
    Picture,
    Series,
)

XLABEL = "spatial frequency (cycles/pixel)"


def rows(d: dict) -> list[dict]:
    return [{"frequency": f, "original_power": po, "reconstruction_power": pr, "ratio": r}
            for f, po, pr, r in zip(d["frequencies"], d["original_power"], d["reconstruction_power"], d["ratio"],
                                    strict=True)]


def summary(d: dict) -> str:
    fr, ra = d["frequencies"], d["ratio"]
    picks = []
    for target in (0.1, 0.25, 0.45):
        if fr:
            i = min(range(len(fr)), key=lambda k: abs(fr[k] - target))
            picks.append(f"{fr[i]:.2f}: {'n/a' if ra[i] is None else format(ra[i], '.3f')}")
    return "power ratio at cycles/pixel " + (", ".join(picks) if picks else "n/a (no frequency measured)")


def figure(results: Labelled) -> Figure:
    power = [Series(d["frequencies"], d["reconstruction_power"], i) for i, (_, d) in enumerate(results)]
    if results:
        first = results[0][1]
        power.insert(0, Series(first["frequencies"], first["original_power"], None, dash=7, width=3))
    ratio = [Series(d["frequencies"], d["ratio"], i) for i, (_, d) in enumerate(results)]
    return Figure("Spectrum: which spatial frequencies the VAE keeps", [
        Chart("Radially averaged power spectrum (dashed grey: original)", XLABEL, "power", power, logy=True,
              xlim=(0.0, 0.5)),
        Chart("Reconstruction / original (1 = kept)", XLABEL, "power ratio", ratio, logy=True, hlines=(1.0,),
              include=(1.0,), xlim=(0.0, 0.5), note="0.5 cycles/pixel = detail alternating every pixel"),
    ])


def pictures(results, image: str) -> list[Picture]:
    return [Picture(f"{label}: reconstruction", r.reconstruction) for label, r in results
            if r.reconstruction is not None]


ANALYSIS = Analysis(
    name="spectrum", title="Spectrum",
    question="Which spatial frequencies does the VAE keep, lose (ratio < 1) or invent (> 1)? The radially "
             "averaged power spectrum of original and reconstruction.",
    run="vaestudio.core.analyses.spectrum:run_spectrum",
    options=(Option("bins", "int", None, "frequency rings from 0 to 0.5 cycles/pixel (default: half the shorter side)",
                    "Frequency rings", metavar="N", minimum=2, maximum=2048, auto="auto (half the shorter side)"),),
    columns=(Column("frequency", "cycles/pixel", ".4f"), Column("original_power", "original power"),
             Column("reconstruction_power", "reconstruction power"), Column("ratio", "power ratio", ".4f")),
    rows=rows, summary=summary, figure=figure, pictures=pictures,
)
