"""A small summing accumulator for the evaluation's tests: the per-channel mean and std of the raw latent."""

from __future__ import annotations

from typing import Any

import torch

from vaestudio.core.evaluate.accumulators import add_states


class MeanAccumulator:
    """A small example (and test fixture): the per-channel mean of the raw latent, as sums.

    ``result()`` gives the latent's per-channel mean and std over every latent pixel of every image,
    which is what a scaling factor is estimated from (``1 / std``).
    """

    name = "latent_channel_stats"

    def __init__(self, _vae: object = None) -> None:
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
        return f"<h4>Latent channel statistics</h4><table><tr><th>channel</th><th>mean</th><th>std</th></tr>{cells}</table>"
