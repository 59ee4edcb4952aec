"""Tensor helpers the VAEs share: padding an image batch to the downscale factor, 2x2 patchify."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, f: int) -> torch.Tensor:
    """Pad (N, C, H, W) on the bottom and right to a multiple of f, and to at least 2f so that
    normalisation layers see more than one latent pixel (reflect where the image allows it)."""
    h, w = x.shape[-2:]
    ph, pw = max((-h) % f, 2 * f - h), max((-w) % f, 2 * f - w)
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x


def patchify(z: torch.Tensor, p: int = 2) -> torch.Tensor:
    """(..., C, h, w) -> (..., C*p*p, h/p, w/p), channels ordered (c, dy, dx) as in diffusers' FLUX.2."""
    *lead, c, h, w = z.shape
    n = len(lead)
    z = z.reshape(*lead, c, h // p, p, w // p, p)
    z = z.permute(*range(n), n, n + 2, n + 4, n + 1, n + 3)
    return z.reshape(*lead, c * p * p, h // p, w // p)


def unpatchify(z: torch.Tensor, p: int = 2) -> torch.Tensor:
    """The inverse of ``patchify``: (..., C*p*p, h, w) -> (..., C, h*p, w*p)."""
    *lead, cpp, h, w = z.shape
    n = len(lead)
    c = cpp // (p * p)
    z = z.reshape(*lead, c, p, p, h, w)
    z = z.permute(*range(n), n, n + 3, n + 1, n + 4, n + 2)
    return z.reshape(*lead, c, h * p, w * p)
