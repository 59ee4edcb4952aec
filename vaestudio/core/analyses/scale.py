"""Scaling factor: the latent statistics a VAE really produces, and the factor that would normalise them.

A diffusion model is trained on latents of about zero mean and unit variance. SD-style VAEs get there
with ``model = (raw - shift) * scale``; Stable Diffusion's 0.18215 is 1 / (the standard deviation of
the raw latents of a batch of training images). This analysis measures the mean and standard
deviation of the latents, per channel and overall, in the raw space (what the encoder outputs) and in
model space (after ``vae.to_model``: the configured scaling and shift), and suggests

- ``suggested_scaling_factor = 1 / std(raw)`` and ``suggested_shift = mean(raw)`` (overall, over all
  channels and positions), which give zero mean and unit variance.

**Far**: the configured factor is *far* from the measured one when the latents' standard deviation
in model space is outside ``[1 / FAR_FACTOR, FAR_FACTOR]`` = [0.67, 1.5]; for SD-style VAEs that is the
configured factor being more than 1.5 times larger or smaller than the suggested one. Single images
vary by some tens of percent around a family's factor, so 1.5 flags wrong families that are far apart
(SD3's 1.5305 against FLUX.1's 0.3611 is 4.2x; a raw latent taken for a model-space one, factor 1 for
SD's 0.18215, is 5.5x) and not an unusual picture. SDXL (0.13025) against SD1 (0.18215) is only 1.4x:
one image cannot tell them apart; the dataset average (``LatentStatsAccumulator``) narrows it down.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from vaestudio.core.analyses.about_scale import ANALYSIS, FAR_FACTOR
from vaestudio.core.analyses.common import Step, Steps
from vaestudio.core.analyses.plotting import draw, png_base64
from vaestudio.core.analyses.spectrum import sig
from vaestudio.core.tensors import patchify
from vaestudio.core.tiling import Progress, ShouldStop
from vaestudio.core.vae import Autoencoder


@dataclass
class ScaleResult:
    mean: float  # raw latents, over all channels and positions
    std: float
    channel_mean: list[float]  # raw, per channel
    channel_std: list[float]
    model_mean: float  # after the VAE's scaling and shift (model space)
    model_std: float
    model_channel_mean: list[float]
    model_channel_std: list[float]
    suggested_scaling_factor: float  # 1 / std
    suggested_shift: float  # mean
    configured_scaling_factor: float
    configured_shift: float
    far: bool  # model_std outside [1/FAR_FACTOR, FAR_FACTOR]
    warning: str | None
    family: str = ""
    values: int = 0  # latent values measured per raw channel
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """``mean``, ``std`` (raw, overall), ``suggested_*``, ``configured_*``; per channel and model space too."""
        d = asdict(self)
        d.pop("notes")
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = sig(v)
            elif isinstance(v, list):
                d[k] = [sig(x) for x in v]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ScaleResult:
        def f(v):
            return math.nan if v is None else v

        kw = {k: ([f(x) for x in v] if isinstance(v, list) else v if k in ("warning", "family") else f(v))
              for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**kw)


def _moments(count: torch.Tensor, s: torch.Tensor, sq: torch.Tensor) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per-channel and overall mean and (population) standard deviation from sums."""
    n = count.clamp(min=1)
    mean = s / n
    var = (sq / n - mean**2).clamp(min=0)
    total = float(count.sum().clamp(min=1))
    m = float(s.sum()) / total
    v = max(float(sq.sum()) / total - m * m, 0.0)
    return mean.numpy(), var.sqrt().numpy(), m, math.sqrt(v)


def scale_from_state(state: dict[str, torch.Tensor], configured_scaling: float, configured_shift: float,
                     family: str = "") -> ScaleResult:
    """The ``ScaleResult`` of summed latent statistics (``LatentStatsAccumulator.state()``)."""
    cm, cs, m, s = _moments(state["latent.raw.count"], state["latent.raw.sum"], state["latent.raw.sumsq"])
    mcm, mcs, mm, ms = _moments(state["latent.model.count"], state["latent.model.sum"], state["latent.model.sumsq"])
    suggested = 1.0 / s if s > 0 else math.inf
    far = not (1.0 / FAR_FACTOR <= ms <= FAR_FACTOR)
    warning = None
    if far:
        warning = (f"latents have standard deviation {ms:.3g} in model space instead of about 1: the configured "
                   f"scaling factor {configured_scaling:g} is {configured_scaling / suggested:.2f}x the measured "
                   f"{suggested:.4g}; the family{f' ({family})' if family else ''} may be wrong")
    values = int(state["latent.raw.count"][0]) if state["latent.raw.count"].numel() else 0
    return ScaleResult(m, s, cm.tolist(), cs.tolist(), mm, ms, mcm.tolist(), mcs.tolist(), suggested, m,
                       float(configured_scaling), float(configured_shift), far, warning, family, values)


class LatentStatsAccumulator:
    """Latent mean and standard deviation over a dataset, raw and in model space (``common.Accumulator``).

    ``update`` takes the raw latents (N, C, h, w) (a vector latent (N, D) counts as one channel);
    the sums per channel (count, sum, sum of squares, in float64) are the state, reduced by adding.

    Build it with ``for_vae(vae)`` (the VAE's own model space and configured factors: exact for every
    architecture), or from what is known without the model: ``LatentStatsAccumulator(ref)``, where
    ``ref`` has a ``family`` name (an evaluation ``VaeRef``), so the class itself is an accumulator
    factory; model space is then the family's ``(raw - shift) * scale`` (patchified where the family
    packs patches), which leaves out per-channel normalisations (Wan, FLUX.2's batch norm).
    """

    name = "latent_stats"

    def __init__(self, ref: object | None = None, *, to_model: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 scaling_factor: float | None = None, shift_factor: float | None = None,
                 family: str | None = None, label: str = "") -> None:
        from vaestudio.core.families import FAMILIES

        self.family = family if family is not None else str(getattr(ref, "family", "") or "")
        self.label = str(getattr(ref, "name", "") or label or self.family or "latents")
        self.colour = int(getattr(ref, "index", 0) or 0)  # the VAE's colour in a report
        fam = FAMILIES.get(self.family)
        self.scaling_factor = float(scaling_factor if scaling_factor is not None else fam.scaling_factor if fam else 1.0)
        self.shift_factor = float(shift_factor if shift_factor is not None else fam.shift_factor if fam else 0.0)
        if to_model is None:
            patch = fam.patch if fam is not None else 1
            scale_, shift_ = self.scaling_factor, self.shift_factor

            def to_model(raw: torch.Tensor) -> torch.Tensor:
                z = (raw - shift_) * scale_
                return patchify(z, patch) if patch > 1 and raw.ndim == 4 else z

        self.to_model = to_model
        self.sums: dict[str, torch.Tensor] = {}

    @classmethod
    def for_vae(cls, vae: Autoencoder, ref: object | None = None) -> LatentStatsAccumulator:
        """Measure against this VAE's own model space and configured scaling and shift; labelled with
        ``ref.name`` when given (an evaluation's ``VaeRef``: the name the report uses), else the source's."""
        from vaestudio.core.evaluate.data import short_names

        label = str(getattr(ref, "name", "") or short_names([vae.info.source])[0])
        acc = cls(to_model=vae.to_model, scaling_factor=vae.info.scaling_factor, shift_factor=vae.info.shift_factor,
                  family=vae.info.family, label=label)
        acc.colour = int(getattr(ref, "index", 0) or 0)
        return acc

    def _add(self, space: str, z: torch.Tensor) -> None:
        z = z.detach().cpu().to(torch.float64)
        z = z.reshape(z.shape[0], 1, -1) if z.ndim == 2 else z.reshape(z.shape[0], z.shape[1], -1)
        parts = {"count": torch.full((z.shape[1],), float(z.shape[0] * z.shape[2]), dtype=torch.float64),
                 "sum": z.sum(dim=(0, 2)), "sumsq": (z * z).sum(dim=(0, 2))}
        for k, v in parts.items():
            key = f"latent.{space}.{k}"
            if key in self.sums and self.sums[key].shape != v.shape:
                raise ValueError(f"latents with {v.shape[0]} channels after {self.sums[key].shape[0]}")
            self.sums[key] = self.sums[key] + v if key in self.sums else v

    def update(self, originals: torch.Tensor | None, reconstructions: torch.Tensor | None,
               raw_latents: torch.Tensor | None) -> None:
        """Add a batch of raw latents (the images are not used)."""
        if raw_latents is None:
            raise ValueError("the latent statistics need the raw latents")
        self._add("raw", raw_latents)
        self._add("model", self.to_model(raw_latents.detach().float().cpu()))

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.sums.items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.sums = {k: torch.as_tensor(v, dtype=torch.float64).clone() for k, v in state.items()}

    def result(self, state: dict[str, torch.Tensor] | None = None) -> dict:
        """``ScaleResult.to_dict()`` of ``state`` (default: this accumulator's); ``{"values": 0}`` when empty."""
        s = self.state() if state is None else state
        if not s:
            return {"values": 0}
        return scale_from_state(s, self.scaling_factor, self.shift_factor, self.family).to_dict()

    def html(self, result: dict | None = None) -> str | None:
        """An HTML fragment for ``result`` (default: ``self.result()``); None when nothing was measured."""
        result = self.result() if result is None else result
        if not result.get("values"):
            return None
        r = ScaleResult.from_dict(result)
        warn = f'<p class="warning"><b>Warning:</b> {html.escape(r.warning)}</p>' if r.warning else ""
        img = png_base64(draw(ANALYSIS, [(self.label, result)], first_colour=self.colour))
        return (
            '<section class="analysis scale"><h3>Scaling factor</h3>'
            f"<p>Latents measured over the dataset ({r.values} values per channel): raw mean {r.mean:.4g}, "
            f"std {r.std:.4g}; in model space mean {r.model_mean:.4g}, std {r.model_std:.4g}. "
            f"Configured scaling factor {r.configured_scaling_factor:.6g}, shift {r.configured_shift:.6g}; "
            f"suggested (zero mean, unit variance) {r.suggested_scaling_factor:.6g}, shift "
            f"{r.suggested_shift:.6g}.</p>{warn}"
            f'<img alt="latent statistics" src="data:image/png;base64,{img}">'
            + _channel_table("Raw channels (what the encoder outputs)", r.channel_mean, r.channel_std)
            + _channel_table("Model-space channels (what the diffusion model sees)", r.model_channel_mean,
                             r.model_channel_std)
            + "</section>"
        )


def _channel_table(caption: str, means: list[float], stds: list[float]) -> str:
    """One table per space: a model-space channel is not the raw channel of the same index where the
    model space is patchified (FLUX.2: 32 raw channels, 128 in model space)."""
    rows = "".join(f"<tr><td>{i}</td><td>{m:.4g}</td><td>{s:.4g}</td></tr>"
                   for i, (m, s) in enumerate(zip(means, stds, strict=True)))
    return (f"<table><caption>{html.escape(caption)}: {len(means)}</caption>"
            f"<tr><th>channel</th><th>mean</th><th>std</th></tr>{rows}</table>")


def run_scale(vae: Autoencoder, pixels: np.ndarray, *, tile: str = "auto", progress: Progress | None = None,
              should_stop: ShouldStop | None = None) -> Generator[Step | ScaleResult, None, ScaleResult]:
    """Encode ``pixels`` and measure its latent statistics against the VAE's scaling and shift.

    Yields ``Step`` records, then the ``ScaleResult`` (also returned).
    """
    steps = Steps(1, progress, should_stop)
    _, notes = vae.prepare_pixels(pixels)
    yield steps.start("encode")
    enc = vae.encode(pixels, tile=tile, should_stop=should_stop)
    steps.finish()
    acc = LatentStatsAccumulator.for_vae(vae)  # the model-space latent is measured as the VAE made it
    acc._add("raw", enc.raw[None])
    acc._add("model", enc.latent[None])
    result = scale_from_state(acc.state(), acc.scaling_factor, acc.shift_factor, acc.family)
    result.notes = notes
    yield result
    return result
