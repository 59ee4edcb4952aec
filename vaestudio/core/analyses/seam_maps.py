"""The seams analysis's picture: each difference map |tiled - untiled| with the tile boundaries drawn."""

from __future__ import annotations

import math

import numpy as np

from vaestudio.core.analyses.plotting import GREY, Canvas
from vaestudio.core.metrics import colorize

#: The colour of the tile boundaries drawn over the maps.
BOUNDARY = (0, 220, 255)


def seam_maps(result, title: str = "", *, cell: int = 240) -> np.ndarray:
    """The difference maps |tiled - untiled| (one per tile size x overlap) of a ``seams.SeamsResult``, with
    the boundaries drawn (not typed by name: ``seams`` imports its description, which imports this)."""
    tiles = sorted({s.tile for s in result.settings})
    overlaps = sorted({s.overlap for s in result.settings})
    vmax = max([float(np.percentile(s.difference, 99.5)) for s in result.settings] + [1e-6])
    h, w = result.untiled.shape[:2]
    scale = min(cell / w, cell / h)
    cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
    pad, head = 12, 44
    width = max(len(overlaps) * (cw + pad) + pad, 420)
    height = head + len(tiles) * (ch + 34) + 10
    c = Canvas(width, height)
    c.text((pad, 6), title or "Tiled minus untiled decode", size=14)
    c.text((pad, 24), f"|tiled - untiled|, black 0 to yellow {vmax:.3g}; cyan: tile boundaries", size=12, color=GREY)
    by = {(s.tile, s.overlap): s for s in result.settings}
    for i, t in enumerate(tiles):
        for j, o in enumerate(overlaps):
            s = by.get((t, o))
            x0, y0 = pad + j * (cw + pad), head + i * (ch + 34)
            if s is None:
                continue
            c.paste(colorize(s.difference, vmax), (x0, y0), fit=(cw, ch))
            for r in s.rows:
                c.draw.line((x0, y0 + r * scale, x0 + cw - 1, y0 + r * scale), fill=BOUNDARY, width=1)
            for q in s.cols:
                c.draw.line((x0 + q * scale, y0, x0 + q * scale, y0 + ch - 1), fill=BOUNDARY, width=1)
            score = "n/a" if not math.isfinite(s.seam_score) else f"{s.seam_score:.3f}"
            c.text((x0, y0 + ch + 4), f"tile {t}, overlap {o}: score {score}", size=12)
    return c.array()
