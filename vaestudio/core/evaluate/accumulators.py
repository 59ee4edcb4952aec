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
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Accumulator(Protocol):
    name: str

    def update(self, original: torch.Tensor, reconstruction: torch.Tensor, latent: torch.Tensor) -> None: ...

    def result(self) -> dict[str, Any]: ...

    def html(self) -> str | None: ...


def default_accumulators() -> tuple[Callable[..., Accumulator], ...]:
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
