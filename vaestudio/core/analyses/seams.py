"""Tile seams: decode the same latent tiled and untiled, and measure the error along the tile boundaries.

Tiled decoding (``vae.decode(..., tile="on", tile_size=..., tile_overlap=...)``, set to
the tile size and overlap, in image pixels) blends overlapping tiles with linear ramps. For each
tile size and overlap this analysis gives:

- the **difference map** ``|tiled - untiled|`` (mean over RGB), with the tile boundaries drawn over it;
- the **seam score**: the mean reconstruction error (``|decoded - original|``, mean over RGB) in
  bands along the tile boundaries divided by the mean error everywhere else. 1 means the boundaries
  are no worse than the rest of the picture (no visible seams); 2 means the error there is twice
  the usual. ``untiled_score`` is the same ratio for the untiled decode with the same bands, the
  control: where it is near ``seam_score``, tiling adds nothing.

Definitions. A **tile boundary** is where two neighbouring tiles meet: the middle of their blended
overlap (the cut itself when the overlap is 0). The **band** is every pixel within ``band`` pixels
of a boundary line (rows for horizontal boundaries, columns for vertical ones), so it is
``2 * band`` pixels wide; ``band`` is ``SEAM_BAND`` = 8 pixels (one latent pixel of an 8x VAE), or one
latent pixel where the VAE's downscale factor is larger. When the error is zero everywhere (an
identity VAE) the score is 1; with a single tile there are no boundaries and the score is undefined
(NaN, null in JSON).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import numpy as np

from vaestudio.core.analyses.about_seams import DEFAULT_OVERLAPS, DEFAULT_TILES
from vaestudio.core.analyses.common import Step, Steps
from vaestudio.core.errors import VaeStudioError
from vaestudio.core.metrics import json_float
from vaestudio.core.tiling import Progress, ShouldStop, tile_starts
from vaestudio.core.vae import Autoencoder

#: Half-width of the band along each tile boundary, in pixels (at least one latent pixel).
SEAM_BAND = 8
#: Errors below this (a 4000th of an 8-bit level) count as none: tile blending alone rounds at ~1e-7.
_TINY = 1e-6


@dataclass
class SeamSetting:
    tile: int  # pixels
    overlap: int  # pixels
    seam_score: float  # mean error in the bands / mean error elsewhere (NaN: a single tile)
    untiled_score: float  # the same ratio for the untiled decode (the control)
    band_error: float  # mean |tiled - original| in the bands
    other_error: float  # ... and elsewhere
    max_difference: float  # max |tiled - untiled| (mean over RGB)
    rows: list[float]  # y of the horizontal boundary lines, in pixels
    cols: list[float]  # x of the vertical boundary lines
    difference: np.ndarray  # (H, W) |tiled - untiled|, mean over RGB

    def to_dict(self) -> dict:
        return {"tile": self.tile, "overlap": self.overlap, "seam_score": json_float(self.seam_score),
                "untiled_score": json_float(self.untiled_score), "band_error": json_float(self.band_error),
                "other_error": json_float(self.other_error), "max_difference": json_float(self.max_difference)}


@dataclass
class SeamsResult:
    settings: list[SeamSetting]
    original: np.ndarray  # (H, W, 3)
    untiled: np.ndarray  # (H, W, 3) the untiled decode
    band: int  # half-width of the bands, pixels
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """``seams``: a list of {tile, overlap, seam_score, ...}; ``band_width``: the band's half-width."""
        return {"seams": [s.to_dict() for s in self.settings], "band_width": self.band}


def boundary_lines(length: int, latent_length: int, downscale: int, tile: int, overlap: int) -> list[float]:
    """Pixel positions where neighbouring tiles meet along one axis (the middle of their overlap).

    ``tile`` and ``overlap`` are in pixels (multiples of ``downscale``), as ``vae.encode_tile`` /
    ``vae.tile_overlap``; the tiles are those ``run_tiled`` uses on a latent of ``latent_length``.
    """
    tl, ol = tile // downscale, overlap // downscale
    starts = tile_starts(latent_length, tl, ol)
    lines = []
    for a, b in zip(starts, starts[1:], strict=False):
        mid = (b + a + tl) * downscale / 2  # between the next tile's start and this tile's end
        if 0 < mid < length:
            lines.append(float(mid))
    return lines


def band_mask(height: int, width: int, rows: Sequence[float], cols: Sequence[float], band: int) -> np.ndarray:
    """(H, W) bool: pixels whose centre is less than ``band`` pixels from a boundary line."""
    ys = np.arange(height) + 0.5
    xs = np.arange(width) + 0.5
    in_rows = np.zeros(height, bool)
    for r in rows:
        in_rows |= np.abs(ys - r) < band
    in_cols = np.zeros(width, bool)
    for c in cols:
        in_cols |= np.abs(xs - c) < band
    return in_rows[:, None] | in_cols[None, :]


def seam_score(error: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    """(score, mean error in the band, mean error elsewhere); see the module docstring."""
    if not mask.any() or mask.all():
        return math.nan, math.nan, math.nan
    b, o = float(error[mask].mean()), float(error[~mask].mean())
    if b <= _TINY and o <= _TINY:
        return 1.0, b, o
    return (math.inf if o <= _TINY else b / o), b, o


def run_seams(vae: Autoencoder, pixels: np.ndarray, *, tiles: Sequence[int] = DEFAULT_TILES,
              overlaps: Sequence[int] = DEFAULT_OVERLAPS, tile: str = "auto", progress: Progress | None = None,
              should_stop: ShouldStop | None = None) -> Generator[Step | SeamsResult, None, SeamsResult]:
    """Decode the latent of ``pixels`` untiled and with every tile size x overlap; measure the seams.

    Parameters
    ----------
    tiles, overlaps : tile sizes and overlaps in image pixels; rounded down to multiples of the
        VAE's downscale factor. Combinations with an overlap not smaller than the tile, or a tile
        under two latent pixels, are skipped (with a note).
    tile : the tiling mode of the encode ("auto", "on", "off"); the decodes are untiled and tiled.

    Yields ``Step`` records, then the ``SeamsResult`` (also returned).
    """
    for attr in ("encode_tile", "tile_overlap"):
        if not hasattr(vae, attr):
            raise VaeStudioError(f"this VAE ({vae.info.architecture}) cannot decode in tiles")
    f = int(vae.downscale)
    notes: list[str] = []
    combos: list[tuple[int, int]] = []
    for t in tiles:
        for o in overlaps:
            t2, o2 = int(t) // f * f, max(0, int(o)) // f * f
            if (t2, o2) != (t, o):
                notes.append(f"tile {t} / overlap {o} rounded down to {t2} / {o2} (multiples of the downscale {f})")
            if t2 < 2 * f or o2 >= t2:
                notes.append(f"skipped tile {t2} with overlap {o2}: the overlap must be smaller than the tile, "
                             f"and the tile at least {2 * f} pixels")
                continue
            if (t2, o2) not in combos:
                combos.append((t2, o2))
    steps = Steps(2 + len(combos), progress, should_stop)
    original, pnotes = vae.prepare_pixels(pixels)
    notes[:0] = pnotes
    yield steps.start("encode")
    enc = vae.encode(pixels, tile=tile, should_stop=should_stop)
    if enc.raw.ndim != 3:
        raise VaeStudioError(f"this VAE ({vae.info.architecture}) has a vector latent: it cannot be decoded in tiles")
    h, w = enc.height, enc.width
    hl, wl = enc.raw.shape[-2:]
    steps.finish()
    yield steps.start("untiled decode")
    untiled = vae.decode(enc.latent, h, w, tile="off", should_stop=should_stop).pixels
    steps.finish()
    err_untiled = np.abs(untiled.astype(np.float32) - original.astype(np.float32)).mean(axis=2)
    band = max(SEAM_BAND, f)
    settings: list[SeamSetting] = []
    for t, o in combos:
        yield steps.start(f"tiled decode: tile {t}, overlap {o}")
        rows = boundary_lines(h, hl, f, t, o)
        cols = boundary_lines(w, wl, f, t, o)
        if not rows and not cols:
            notes.append(f"tile {t} covers the whole {w}x{h} image: one tile, no seams to measure")
            settings.append(SeamSetting(t, o, math.nan, math.nan, math.nan, math.nan, 0.0, [], [],
                                        np.zeros((h, w), np.float32)))
            steps.finish()
            continue
        tiled = vae.decode(enc.latent, h, w, tile="on", tile_size=t, tile_overlap=o, should_stop=should_stop).pixels
        err = np.abs(tiled.astype(np.float32) - original.astype(np.float32)).mean(axis=2)
        mask = band_mask(h, w, rows, cols, band)
        score, b, other = seam_score(err, mask)
        control, _, _ = seam_score(err_untiled, mask)
        diff = np.abs(tiled.astype(np.float32) - untiled.astype(np.float32)).mean(axis=2)
        settings.append(SeamSetting(t, o, score, control, b, other, float(diff.max()), rows, cols, diff))
        steps.finish()
    result = SeamsResult(settings, original, untiled, band, notes)
    yield result
    return result
