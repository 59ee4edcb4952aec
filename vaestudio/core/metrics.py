"""Image quality metrics for a reconstruction: PSNR, SSIM, MAE, colour shift, difference map.

PSNR, MAE and colour shift come from one place, ``pixel_errors`` (batched, float64), for one image
(``compute_metrics``, ``psnr``, ``color_shift``), for the evaluation's batches and for the frames of a
clip (``clip_metrics``, with ``flicker``: how the reconstruction's frame-to-frame change differs from the
original's) alike.

SSIM follows Wang et al. (2004) with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
K2 = 0.03, data range 1, averaged over RGB; it equals scikit-image's ``structural_similarity(...,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)`` (a test checks
this, to 1e-7). It runs as separable float32 filters in torch, which is fast for large images and spares the
desktop bundle scipy and scikit-image.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import cache

import numpy as np
import torch

#: The difference map shows |error| from 0 to this value (so maps are comparable across VAEs).
DIFF_SCALE = 0.25


@dataclass
class Metrics:
    psnr: float
    ssim: float
    mae: float
    color_shift: tuple[float, float, float]  # mean (reconstruction - original) for R, G, B
    lpips: float | None = None
    lpips_status: str = "unavailable"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["color_shift"] = list(self.color_shift)
        return d


def json_float(x: float | None, digits: int | None = 6) -> float | None:
    """A float for JSON: None stands for infinite or undefined (e.g. the PSNR of identical images)."""
    if x is None or not math.isfinite(x):
        return None
    return float(x) if digits is None else round(float(x), digits)


@dataclass
class PixelErrors:
    """Per image of a batch, in float64: the mean squared and absolute errors (N,) and the colour
    shift (N, C), the mean of (reconstruction - original) per channel."""

    mse: torch.Tensor
    mae: torch.Tensor
    color_shift: torch.Tensor


def pixel_errors(original: torch.Tensor, recon: torch.Tensor) -> PixelErrors:
    """The errors of (N, C, H, W) reconstructions of (N, C, H, W) originals, image by image."""
    diff = recon.to(torch.float64) - original.to(torch.float64)
    return PixelErrors(diff.square().mean(dim=(1, 2, 3)), diff.abs().mean(dim=(1, 2, 3)), diff.mean(dim=(2, 3)))


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB for data range 1; infinite for identical images."""
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def _batch(image: np.ndarray) -> torch.Tensor:
    """An (H, W, C) image as a (1, C, H, W) batch."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]


def _errors(a: np.ndarray, b: np.ndarray) -> PixelErrors:
    return pixel_errors(_batch(a), _batch(b))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two (H, W, C) images in [0, 1]."""
    return psnr_from_mse(float(_errors(a, b).mse[0]))


def color_shift(original: np.ndarray, recon: np.ndarray) -> tuple[float, ...]:
    """The mean of (recon - original) per channel of two (H, W, C) images."""
    return tuple(float(v) for v in _errors(original, recon).color_shift[0])


@cache
def _gauss(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over channels of two (H, W, 3) images in [0, 1]."""
    g = _gauss()
    k = g.numel()
    x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)
    y = torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)).permute(2, 0, 1)
    c1, c2 = 0.01**2, 0.03**2
    if x.shape[-1] < k or x.shape[-2] < k:
        # too small for the window: fall back to one global window
        x, y = x.double(), y.double()
        mx, my = x.mean(), y.mean()
        vx, vy, cxy = x.var(unbiased=False), y.var(unbiased=False), ((x - mx) * (y - my)).mean()
        return float(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2)))
    w = g.float().tolist()
    stack = torch.stack([x, y, x * x, y * y, x * y])  # (5, C, H, W): all five blurs in one pass

    def blur(t: torch.Tensor) -> torch.Tensor:
        # separable Gaussian as 11 shifted multiply-adds per axis ('valid': the border that
        # skimage crops is never computed); much faster than conv2d with one channel on the CPU
        h = t.shape[-2] - k + 1
        rows = sum(wi * t[..., i : i + h, :] for i, wi in enumerate(w))
        n = t.shape[-1] - k + 1
        return sum(wi * rows[..., i : i + n] for i, wi in enumerate(w))

    mx, my, xx, yy, xy = blur(stack).double().unbind(0)
    sxx, syy, sxy = xx - mx * mx, yy - my * my, xy - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())


def difference_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel mean absolute difference over RGB, (H, W) float."""
    return np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(axis=2)


_ANCHORS = np.array([  # a perceptually ordered dark-to-bright map (black, purple, red, orange, yellow)
    [0.0, 0.0, 0.02], [0.23, 0.05, 0.42], [0.58, 0.15, 0.40], [0.87, 0.32, 0.23], [0.99, 0.65, 0.04], [0.99, 1.0, 0.64],
], dtype=np.float32)


def colorize(values: np.ndarray, vmax: float = DIFF_SCALE) -> np.ndarray:
    """Map (H, W) values in [0, vmax] to RGB with a heat colour map."""
    t = np.clip(values / max(vmax, 1e-12), 0.0, 1.0) * (len(_ANCHORS) - 1)
    i = np.minimum(t.astype(np.int32), len(_ANCHORS) - 2)
    f = (t - i)[..., None]
    return (_ANCHORS[i] * (1 - f) + _ANCHORS[i + 1] * f).astype(np.float32)


def lpips_status() -> str:
    """LPIPS (v0.1, AlexNet: vaestudio/core/lpips.py) runs wherever its shipped weights are present."""
    from vaestudio.core.lpips import weights_present

    return "available" if weights_present() else "unavailable (the LPIPS weights file is missing from this install)"


def lpips_too_small() -> str:
    from vaestudio.core.lpips import MIN_SIDE

    return f"not measured (LPIPS needs images of at least {MIN_SIDE} pixels a side)"


def compute_metrics(original: np.ndarray, recon: np.ndarray, *, with_lpips: bool = False) -> Metrics:
    e = _errors(original, recon)
    shift = tuple(float(v) for v in e.color_shift[0])
    m = Metrics(psnr_from_mse(float(e.mse[0])), ssim(original, recon), float(e.mae[0]), shift)
    status = lpips_status() if with_lpips else "not requested"
    m.lpips_status = status
    if status == "available":
        m.lpips = _lpips(original, recon)
        if m.lpips is None:
            m.lpips_status = lpips_too_small()
    return m


def lpips_batch(a: torch.Tensor, b: torch.Tensor) -> list[float | None]:
    """LPIPS (AlexNet) of two (N, 3, H, W) batches in [0, 1]; check ``lpips_status()`` first. Images
    smaller than AlexNet's receptive field (``lpips.MIN_SIDE``) have none."""
    from vaestudio.core.lpips import MIN_SIDE, model

    if min(a.shape[-2:]) < MIN_SIDE:
        return [None] * a.shape[0]
    with torch.inference_mode():
        d = model()(a.float() * 2 - 1, b.float() * 2 - 1)
    return [float(v) for v in d.reshape(-1)]


def _lpips(a: np.ndarray, b: np.ndarray) -> float | None:
    def t(x):
        return torch.from_numpy(np.ascontiguousarray(x, np.float32)).permute(2, 0, 1)[None]

    return lpips_batch(t(a), t(b))[0]


@dataclass
class ClipMetrics:
    """Per-frame PSNR (dB), SSIM and MAE of a reconstructed clip, and its ``flicker``."""

    psnr: list[float]
    ssim: list[float]
    mae: list[float]
    flicker: float

    @property
    def psnr_mean(self) -> float:
        """The mean of the frames' PSNRs (infinite when one frame is exact)."""
        return float(np.mean(self.psnr))

    @property
    def psnr_min_frame(self) -> int:
        """The index of the worst frame (lowest PSNR)."""
        return int(np.argmin(self.psnr))


def _clip_batch(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, C) frames as a (T, C, H, W) batch."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)


def flicker(original: np.ndarray, recon: np.ndarray) -> float:
    """How much a reconstruction's change between frames differs from the original's.

    The mean over t >= 1 of the mean absolute ``(r_t - r_{t-1}) - (x_t - x_{t-1})`` over pixels and
    channels, for (T, H, W, 3) clips ``x`` (original) and ``r`` (reconstruction) in [0, 1]. It is 0 for a
    perfect round trip and for any error that is the same in every frame (a constant colour shift);
    it grows with errors that change from frame to frame (flicker, ghosting, smeared motion). 0 for a
    clip of one frame.
    """
    if original.shape != recon.shape:
        raise ValueError(f"clips of different shapes: {original.shape} and {recon.shape}")
    if original.shape[0] < 2:
        return 0.0
    err = recon.astype(np.float64) - original.astype(np.float64)  # (r_t - r_{t-1}) - (x_t - x_{t-1})
    return float(np.abs(np.diff(err, axis=0)).mean(axis=(1, 2, 3)).mean())


def clip_metrics(original: np.ndarray, recon: np.ndarray) -> ClipMetrics:
    """PSNR, SSIM and MAE of each frame of two (T, H, W, 3) clips in [0, 1] (``pixel_errors`` and
    ``ssim``, as for images), and the clip's ``flicker``."""
    if original.shape != recon.shape:
        raise ValueError(f"clips of different shapes: {original.shape} and {recon.shape}")
    e = pixel_errors(_clip_batch(original), _clip_batch(recon))
    return ClipMetrics([psnr_from_mse(float(m)) for m in e.mse], [ssim(a, b) for a, b in zip(original, recon, strict=True)],
                       [float(m) for m in e.mae], flicker(original, recon))
