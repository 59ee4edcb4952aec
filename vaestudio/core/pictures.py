"""Pictures made from results: latent channel mosaics, heat-map sheets, comparison strips.

Qt-free, so the window, the CLI and the tests make the same pictures; the window only shows them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vaestudio.core.latents import as_channels
from vaestudio.core.metrics import colorize


def channel_order(latent, by: str = "channel") -> list[int]:
    """Channel indices in display order: as stored, or by decreasing variance."""
    arr = as_channels(latent)
    if by == "variance":
        return [int(i) for i in np.argsort(-arr.reshape(arr.shape[0], -1).var(axis=1), kind="stable")]
    return list(range(arr.shape[0]))


def mosaic_columns(n: int, h: int, w: int, aspect: float = 1.6) -> int:
    """How many columns make a grid of n cells of h x w closest to the given width/height aspect."""
    if h == 1 and w == 1:
        return n  # a latent vector: one strip
    best, best_err = 1, math.inf
    for cols in range(1, n + 1):
        rows = math.ceil(n / cols)
        err = abs(math.log((cols * w) / (rows * h) / aspect))
        if err < best_err:
            best, best_err = cols, err
    return best


@dataclass
class Mosaic:
    """Channels laid out in a grid: ``values`` holds each channel scaled to [0, 1] (NaN in the gaps)."""

    values: np.ndarray  # (H, W) float32
    order: list[int]  # the channel in each cell, row by row
    cols: int
    cell_h: int
    cell_w: int
    gap: int
    levels: np.ndarray  # (C, 2): the value range that 0 and 1 stand for, per channel

    @property
    def rows(self) -> int:
        return math.ceil(len(self.order) / self.cols)

    def cell_at(self, x: float, y: float) -> tuple[int, int, int] | None:
        """(channel, column, row inside the channel) under mosaic pixel (x, y), or None in a gap."""
        if x < 0 or y < 0:
            return None
        sx, sy = self.cell_w + self.gap, self.cell_h + self.gap
        col, row = int(x // sx), int(y // sy)
        cx, cy = int(x - col * sx), int(y - row * sy)
        i = row * self.cols + col
        if col >= self.cols or i >= len(self.order) or cx >= self.cell_w or cy >= self.cell_h:
            return None
        return self.order[i], cx, cy

    def cell_origin(self, channel: int) -> tuple[int, int]:
        """Top-left mosaic pixel of a channel's cell."""
        i = self.order.index(channel)
        return (i % self.cols) * (self.cell_w + self.gap), (i // self.cols) * (self.cell_h + self.gap)


def channel_mosaic(latent, *, shared: bool = True, order: list[int] | None = None, cols: int | None = None,
                   gap: int | None = None) -> Mosaic:
    """Lay the channels of a (C, h, w) latent (or a vector) out in a grid, each scaled to [0, 1]:
    with one range for all channels (``shared``) or a range per channel."""
    arr = as_channels(latent)
    n, h, w = arr.shape
    order = list(range(n)) if order is None else list(order)
    cols = cols or mosaic_columns(len(order), h, w)
    gap = (0 if h == w == 1 else max(1, min(h, w) // 16)) if gap is None else gap
    if shared:
        lo = np.full(n, float(arr.min()))
        hi = np.full(n, float(arr.max()))
    else:
        lo, hi = arr.min(axis=(1, 2)).astype(np.float64), arr.max(axis=(1, 2)).astype(np.float64)
    span = np.maximum(hi - lo, 1e-12)
    rows = math.ceil(len(order) / cols)
    out = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap), np.nan, np.float32)
    for i, c in enumerate(order):
        r, k = divmod(i, cols)
        y, x = r * (h + gap), k * (w + gap)
        out[y : y + h, x : x + w] = (arr[c] - lo[c]) / span[c]
    return Mosaic(out, order, cols, h, w, gap, np.stack([lo, hi], axis=1))


def heatmap_sheet(latent, *, shared: bool = True, order: list[int] | None = None, min_size: int = 512) -> np.ndarray:
    """The channel mosaic as an RGB picture (white gaps), enlarged to at least ``min_size`` pixels."""
    m = channel_mosaic(latent, shared=shared, order=order, gap=None)
    gaps = np.isnan(m.values)
    rgb = colorize(np.nan_to_num(m.values), 1.0)
    rgb[gaps] = 1.0
    scale = max(1, math.ceil(min_size / max(rgb.shape[:2])))
    return np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)


def comparison_strip(*images: np.ndarray, gap: int = 0) -> np.ndarray:
    """Images of one height side by side (original | reconstruction | difference, ...), white gaps."""
    h = max(im.shape[0] for im in images)
    parts = []
    for i, im in enumerate(images):
        if im.shape[0] != h:  # e.g. a 28x28 digit beside a photo: scale to the same height
            f = max(1, round(h / im.shape[0]))
            im = np.repeat(np.repeat(im, f, axis=0), f, axis=1)[:h]
            im = np.pad(im, ((0, h - im.shape[0]), (0, 0), (0, 0)), constant_values=1.0)
        parts.append(im.astype(np.float32))
        if gap and i < len(images) - 1:
            parts.append(np.ones((h, gap, 3), np.float32))
    return np.concatenate(parts, axis=1)
