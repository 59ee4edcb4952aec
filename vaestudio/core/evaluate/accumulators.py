"""The hook for per-batch analyses that run inside the evaluation loop.

An *accumulator factory* is called once per VAE (with that VAE's ``VaeRef``; or, when the factory
has a ``for_vae`` method, that is called with the loaded VAE) and returns an object with this
interface (``Accumulator``)::

    name: str                                   # unique; the key in summary.json's "analyses"
    update(original, reconstruction, latent)    # once per batch, for this VAE
    result() -> dict                            # JSON-able, at the end
    html() -> str | None                        # an optional fragment for report.html

``original`` and ``reconstruction`` are (N, 3, H, W) float32 CPU tensors in [0, 1] (what the VAE
saw, and what it gave back, cropped to the image); ``latent`` is the encoder's raw latent (N, C, h, w)
(or (N, D) for vector latents), float32 on the CPU.

Accumulators that keep sums should also implement::

    state() -> dict[str, torch.Tensor]          # sums: the state over two sets is the sum of their states
    load_state(state: dict[str, torch.Tensor])  # replace the accumulator's state

Then the evaluation can (a) add the states of all processes under torchrun (gathered to rank 0 and
summed there, so accumulators whose keys differ between ranks still combine), and
(b) resume: each batch's contribution is computed by a fresh accumulator from the factory, saved
beside the batch's rows (state/rank*/batch-*.npz) and added to the running total; at the end one
accumulator receives the total with ``load_state`` and is asked for ``result()`` and ``html()``.
Accumulators without ``state`` see only the batches this process evaluated in this run (their result
then carries ``"partial": true``).

Keep ``update`` cheap and in torch: it runs on the evaluation's thread between batches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from vaestudio.core.evaluate.types import VaeRef


@runtime_checkable
class Accumulator(Protocol):
    name: str

    def update(self, original: torch.Tensor, reconstruction: torch.Tensor, latent: torch.Tensor) -> None: ...

    def result(self) -> dict[str, Any]: ...

    def html(self) -> str | None: ...


@runtime_checkable
class SummingAccumulator(Accumulator, Protocol):
    def state(self) -> dict[str, torch.Tensor]: ...

    def load_state(self, state: dict[str, torch.Tensor]) -> None: ...


AccumulatorFactory = Callable[["VaeRef"], Accumulator]


def default_accumulators() -> tuple[AccumulatorFactory, ...]:
    """The dataset-wide analyses every evaluation reports: the average spectrum (which frequencies
    the VAE keeps) and the latents' statistics (the scaling factor that would give unit variance)."""
    from vaestudio.core.analyses.scale import LatentStatsAccumulator
    from vaestudio.core.analyses.spectrum import SpectrumAccumulator

    return (SpectrumAccumulator, LatentStatsAccumulator)


def sums(acc: Accumulator) -> bool:
    """Does this accumulator expose additive state (reducible across processes, resumable)?"""
    return callable(getattr(acc, "state", None)) and callable(getattr(acc, "load_state", None))


def add_states(total: dict[str, torch.Tensor], delta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for k, v in delta.items():
        v = torch.as_tensor(v)
        total[k] = total[k] + v if k in total else v.clone()
    return total


class MeanAccumulator:
    """A small example (and test fixture): the per-channel mean of the raw latent, as sums.

    ``result()`` gives the latent's per-channel mean and std over every latent pixel of every image,
    which is what a scaling factor is estimated from (``1 / std``).
    """

    name = "latent_channel_stats"

    def __init__(self, _vae: VaeRef | None = None) -> None:
        self._s: dict[str, torch.Tensor] = {}

    def update(self, original: torch.Tensor, reconstruction: torch.Tensor, latent: torch.Tensor) -> None:
        z = latent.to(torch.float64)
        z = z.reshape(z.shape[0], z.shape[1], -1) if z.ndim > 2 else z[:, :, None]
        add_states(self._s, {"n": torch.tensor(float(z.shape[0] * z.shape[2]), dtype=torch.float64),
                             "sum": z.sum(dim=(0, 2)), "sq": z.square().sum(dim=(0, 2))})

    def state(self) -> dict[str, torch.Tensor]:
        return dict(self._s)

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self._s = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in state.items()}

    def result(self) -> dict[str, Any]:
        if not self._s:
            return {"n": 0}
        n = float(self._s["n"])
        mean = self._s["sum"] / n
        std = (self._s["sq"] / n - mean.square()).clamp(min=0).sqrt()
        return {"n": int(n), "mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std]}

    def html(self) -> str | None:
        r = self.result()
        if not r.get("n"):
            return None
        cells = "".join(f"<tr><td>{i}</td><td>{m:.4f}</td><td>{s:.4f}</td></tr>"
                        for i, (m, s) in enumerate(zip(r["mean"], r["std"], strict=True)))
        return f"<table><tr><th>channel</th><th>mean</th><th>std</th></tr>{cells}</table>"
