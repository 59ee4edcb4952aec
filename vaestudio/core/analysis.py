"""Looking at latents: per-channel statistics, heatmaps, and an instant latent-to-RGB preview."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vaestudio.core.families import latent_rgb_factors


@dataclass
class ChannelStats:
    channel: int
    mean: float
    std: float
    min: float
    max: float
    hist: list[int]
    bin_edges: list[float]


def as_channels(latent: torch.Tensor | np.ndarray) -> np.ndarray:
    """(C, h, w) latents as a float array; a latent vector (D,) becomes D 1x1 channels."""
    arr = latent.detach().float().cpu().numpy() if isinstance(latent, torch.Tensor) else np.asarray(latent, np.float32)
    if arr.ndim == 1:
        arr = arr[:, None, None]
    if arr.ndim != 3:
        raise ValueError(f"expected latents of shape (C, h, w) or (D,), got {arr.shape}")
    return arr


def channel_stats(latent: torch.Tensor | np.ndarray, bins: int = 32) -> list[ChannelStats]:
    arr = as_channels(latent)
    out = []
    for c, ch in enumerate(arr):
        counts, edges = np.histogram(ch, bins=bins)
        out.append(ChannelStats(c, float(ch.mean()), float(ch.std()), float(ch.min()), float(ch.max()),
                                counts.tolist(), edges.tolist()))
    return out


def heatmaps(latent: torch.Tensor | np.ndarray, shared: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Normalise each channel to [0, 1]: per channel, or with one range shared by all channels.

    Returns the (C, h, w) maps and the (C, 2) value ranges that 0 and 1 stand for.
    """
    arr = as_channels(latent)
    if shared:
        lo = np.full(arr.shape[0], arr.min())
        hi = np.full(arr.shape[0], arr.max())
    else:
        lo, hi = arr.min(axis=(1, 2)), arr.max(axis=(1, 2))
    span = np.maximum(hi - lo, 1e-12)
    maps = (arr - lo[:, None, None]) / span[:, None, None]
    return maps.astype(np.float32), np.stack([lo, hi], axis=1)


def latent_preview(latent: torch.Tensor | np.ndarray, family: str) -> np.ndarray | None:
    """Approximate RGB (h, w, 3) in [0, 1] straight from scaled latents, with no decoder run."""
    known = latent_rgb_factors(family)
    arr = as_channels(latent)
    if known is None:
        return None
    factors, bias = np.asarray(known[0], np.float32), np.asarray(known[1], np.float32)
    if factors.shape[0] != arr.shape[0]:
        return None
    rgb = np.einsum("chw,ck->hwk", arr, factors) + bias
    return np.clip((rgb + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)
