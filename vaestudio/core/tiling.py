"""Tiled application of an encoder or decoder, with overlapping tiles blended by linear ramps.

Tiles are processed one at a time so memory stays bounded; progress is reported and cancellation
checked after every tile.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vaestudio.core.errors import Cancelled

Progress = Callable[[int, int], None]
ShouldStop = Callable[[], bool]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with at least ``overlap`` overlap."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _ramp(n: int, overlap: int, rise: bool, fall: bool) -> torch.Tensor:
    w = torch.ones(n)
    k = min(overlap, n // 2)
    if k > 0:
        edge = torch.arange(1, k + 1, dtype=torch.float32) / (k + 1)
        if rise:
            w[:k] = edge
        if fall:
            w[n - k:] = edge.flip(0)
    return w


def run_tiled(
    x: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    tile: int,
    overlap: int,
    up: int = 1,
    down: int = 1,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> torch.Tensor:
    """Apply ``fn`` to overlapping tiles of ``x`` (N, C, H, W) and blend the results.

    ``fn`` maps a tile of size (h, w) to one of size (h * up / down, w * up / down); ``tile`` and
    ``overlap`` are in input pixels and must be multiples of ``down``.
    """
    _, _, h, w = x.shape
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    total = len(ys) * len(xs)
    out: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    done = 0
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            if should_stop is not None and should_stop():
                raise Cancelled()
            part = x[..., y0 : y0 + tile, x0 : x0 + tile]
            res = fn(part).float().cpu()
            if out is None:
                out = torch.zeros(res.shape[0], res.shape[1], h * up // down, w * up // down)
                weight = torch.zeros(1, 1, out.shape[2], out.shape[3])
            th, tw = res.shape[-2:]
            o = overlap * up // down
            wy = _ramp(th, o, rise=i > 0, fall=i < len(ys) - 1)
            wx = _ramp(tw, o, rise=j > 0, fall=j < len(xs) - 1)
            wgt = (wy[:, None] * wx[None, :])[None, None]
            oy, ox = y0 * up // down, x0 * up // down
            out[..., oy : oy + th, ox : ox + tw] += res * wgt
            weight[..., oy : oy + th, ox : ox + tw] += wgt
            done += 1
            if progress is not None:
                progress(done, total)
    assert out is not None and weight is not None
    return out / weight


def run_clip_tiled(streams: list, make: Callable[[], object], step: Callable[[object, torch.Tensor], torch.Tensor],
                   x: torch.Tensor, tiles: dict) -> torch.Tensor:
    """``step`` of each tile's own stream on the spatial tiles of a clip x (1, C, t, H, W), blended as images are
    (``run_tiled``, the time axis folded into the channels). Tiles come in the same order every chunk, so tile i
    always continues stream i (a causal video VAE's cache of its own); ``make`` starts a new one."""
    c, t = x.shape[1:3]
    calls, shape = [0], []

    def one(part: torch.Tensor) -> torch.Tensor:
        i = calls[0]
        calls[0] += 1
        if i == len(streams):
            streams.append(make())
        out = step(streams[i], part.unflatten(1, (c, t)))
        shape[:] = out.shape[1:3]
        return out.flatten(1, 2)

    res = run_tiled(x.flatten(1, 2), one, **tiles)
    return res.unflatten(1, tuple(shape))


def clip_tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tiles: dict | None) -> torch.Tensor:
    """``fn`` (no state between calls) on a whole clip (1, C, t, H, W), or on its spatial tiles, blended."""
    return fn(x) if tiles is None else run_clip_tiled([], lambda: None, lambda _, part: fn(part), x, tiles)
