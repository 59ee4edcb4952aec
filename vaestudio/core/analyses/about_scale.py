"""The scaling factor, described for the CLI and the window (the computation: ``scale.py``)."""

from __future__ import annotations

import math

from vaestudio.core.analyses.describe import Analysis, Chart, Column, Figure, Labelled, Series

#: The configured factor is "far" from the measured one beyond this ratio (model-space std outside [1/F, F]).
FAR_FACTOR = 1.5
SUMMARY_KEYS = ("suggested_scaling_factor", "suggested_shift", "configured_scaling_factor", "configured_shift")


def rows(d: dict) -> list[dict]:
    """The overall numbers, raw and in model space, then each channel of each space. The two spaces are
    separate rows: a model-space channel is not the raw channel of the same index where the model space
    is patchified (FLUX.2: 32 raw channels, 128 in model space)."""
    summary = {k: d[k] for k in SUMMARY_KEYS}
    out = [{"space": "raw", "channel": "all", "mean": d["mean"], "std": d["std"], **summary},
           {"space": "model", "channel": "all", "mean": d["model_mean"], "std": d["model_std"], **summary}]
    for space, mk, sk in (("raw", "channel_mean", "channel_std"), ("model", "model_channel_mean", "model_channel_std")):
        out += [{"space": space, "channel": i, "mean": m, "std": s, **summary}
                for i, (m, s) in enumerate(zip(d[mk], d[sk], strict=True))]
    return out


def summary(d: dict) -> str:
    def g(key: str, spec: str = ".4g") -> str:
        return "n/a" if d[key] is None else format(d[key], spec)

    return (f"raw latents mean {g('mean')} std {g('std')}; suggested scaling factor "
            f"{g('suggested_scaling_factor', '.5g')} shift {g('suggested_shift')}; configured "
            f"{g('configured_scaling_factor', '.5g')} shift {g('configured_shift')}")


def _num(v) -> float:
    return math.nan if v is None else float(v)


def figure(results: Labelled) -> Figure:
    charts = []
    for i, (label, d) in enumerate(results):
        n = len(d["model_channel_std"])
        ratio = _num(d["configured_scaling_factor"]) * _num(d["std"])
        note = (f"WARNING: the configured factor is {ratio:.2f}x the measured one (beyond {FAR_FACTOR}x): is the "
                f"family ({d.get('family', '')}) right?" if d["far"] else
                f"configured / measured factor: {ratio:.2f}x (within {FAR_FACTOR}x); overall std "
                f"{_num(d['model_std']):.3g}, mean {_num(d['model_mean']):.3g}")
        title = (f"{label[-40:]}: configured factor {_num(d['configured_scaling_factor']):.5g} (shift "
                 f"{_num(d['configured_shift']):.4g}), measured {_num(d['suggested_scaling_factor']):.5g} (shift "
                 f"{_num(d['suggested_shift']):.4g})")
        xs = list(range(n))
        charts.append(Chart(title, "model-space channel: bars std (want 1), grey dots mean (want 0)", "value", [
            Series(xs, d["model_channel_std"], i, style="bars"),
            Series(xs, d["model_channel_mean"], None, style="dots"),
        ], hlines=(0.0, 1.0), include=(0.0, 1.1), xlim=(-0.6, n - 0.4), integer_x=True,
            xticks=[(k, str(k)) for k in range(n) if n <= 32 or k % max(1, n // 16) == 0], note=note, warn=d["far"]))
    return Figure("Scaling factor: latent statistics in model space", charts, columns=1)


ANALYSIS = Analysis(
    name="scale", title="Scaling factor",
    question="Do the latents have unit variance in model space? Their mean and std, the factor and shift that "
             "would normalise them, and a warning when the configured factor is far off.",
    run="vaestudio.core.analyses.scale:run_scale",
    options=(),
    columns=(Column("space", "space"), Column("channel", "channel"), Column("mean", "mean"), Column("std", "std"),
             Column("suggested_scaling_factor", "suggested factor", ".5g"),
             Column("suggested_shift", "suggested shift"),
             Column("configured_scaling_factor", "configured factor", ".5g"),
             Column("configured_shift", "configured shift")),
    rows=rows, summary=summary, figure=figure, warning=lambda d: d.get("warning"),
)
