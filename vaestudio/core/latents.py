"""Looking at latents: per-channel statistics and an instant latent-to-RGB preview (the heat-map
mosaic is ``core.pictures.channel_mosaic``)."""

from __future__ import annotations

import numpy as np
import torch

from vaestudio.core.families import latent_rgb_factors


def as_channels(latent: torch.Tensor | np.ndarray) -> np.ndarray:
    """(C, h, w) latents as a float array; a latent vector (D,) becomes D 1x1 channels."""
    arr = latent.detach().float().cpu().numpy() if isinstance(latent, torch.Tensor) else np.asarray(latent, np.float32)
    if arr.ndim == 1:
        arr = arr[:, None, None]
    if arr.ndim != 3:
        raise ValueError(f"expected latents of shape (C, h, w) or (D,), got {arr.shape}")
    return arr


def channel_stats(latent: torch.Tensor | np.ndarray) -> np.ndarray:
    """(C, 4) float64 array: mean, std, min and max of each channel."""
    arr = as_channels(latent)
    flat = arr.reshape(arr.shape[0], -1).astype(np.float64)
    return np.stack([flat.mean(1), flat.std(1), flat.min(1), flat.max(1)], axis=1)


def latent_preview(latent: torch.Tensor | np.ndarray, family: str) -> np.ndarray | None:
    """Approximate RGB (h, w, 3) in [0, 1] straight from a model-space latent, with no decoder run.

    The family's published linear factors are used where they exist (FLUX.2's act on the latent
    unpatchified to 32 channels); otherwise the first three principal components of this latent's
    own channels, so any channel count gets a picture. None for vector latents (MNIST).
    """
    from vaestudio.core.families import FAMILIES

    fam = FAMILIES.get(family)
    if fam is not None and fam.downscale == 1:
        return None
    arr = as_channels(latent)
    if arr.shape[1] == 1 and arr.shape[2] == 1:
        return None
    if fam is not None and fam.patch > 1 and arr.shape[0] % (fam.patch**2) == 0:
        from vaestudio.core.tensors import unpatchify

        arr = unpatchify(torch.from_numpy(np.ascontiguousarray(arr)), fam.patch).numpy()
    known = latent_rgb_factors(family)
    if known is not None and len(known[0]) == arr.shape[0]:
        factors, bias = np.asarray(known[0], np.float32), np.asarray(known[1], np.float32)
        rgb = np.einsum("chw,ck->hwk", arr, factors) + bias
        return np.clip((rgb + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)
    return pca_preview(arr)


def pca_preview(arr: np.ndarray) -> np.ndarray:
    """The first three principal components of a (C, h, w) latent's channels as RGB in [0, 1]."""
    c, h, w = arr.shape
    x = arr.reshape(c, -1).astype(np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    if c >= 3:
        cov = x @ x.T / max(1, x.shape[1] - 1)
        vals, vecs = np.linalg.eigh(cov)
        comps = vecs[:, ::-1][:, :3]
        # a principal component's sign is arbitrary: fix it so the largest loading is positive
        comps = comps * np.sign(comps[np.abs(comps).argmax(axis=0), range(3)])
        proj = comps.T @ x
    else:
        proj = np.concatenate([x, np.zeros((3 - c, x.shape[1]))])
    lo = np.percentile(proj, 1, axis=1, keepdims=True)
    hi = np.percentile(proj, 99, axis=1, keepdims=True)
    rgb = (proj - lo) / np.maximum(hi - lo, 1e-12)
    return np.clip(rgb.T.reshape(h, w, 3), 0.0, 1.0).astype(np.float32)
