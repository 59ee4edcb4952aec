"""A tiny plotting helper on Pillow: line charts with axes, ticks, labels and a legend.

The desktop bundle leaves matplotlib out. ``draw_figure`` draws an analysis's ``describe.Figure``
for the PNGs the command line writes (and the evaluation report embeds); the window draws the same
record with pyqtgraph. ``Canvas`` holds the picture, ``Axes`` one chart in it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: One colour per VAE (the tab10 palette), in order: the same in the CLI's pictures and the window's plots.
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
BLACK, GREY, LIGHT, WHITE = (20, 20, 20), (110, 110, 110), (225, 225, 225), (255, 255, 255)
#: What a figure draws that is no VAE's (the original's spectrum, the means in the scale chart): a grey
#: that shows on the PNG's white and on the window's black alike, and is not in the palette.
REFERENCE = (150, 150, 160)
WARN = (190, 30, 30)


def colour(i: int) -> tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


@cache
def font(size: int = 13) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def fmt(v: float) -> str:
    """A tick label: short, no trailing zeros."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e")
    return f"{v:.4g}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round numbers (1, 2, 2.5, 5 times a power of ten) between lo and hi."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    out = []
    v = first
    while v <= hi + step * 1e-9:
        out.append(round(v, 12))
        v += step
    return out


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten between lo and hi (with 2x and 5x when the range is short)."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    mults = (1,) if b - a > 3 else (1, 2, 5)
    step = max(1, (b - a) // 6)
    out = [m * 10.0**e for e in range(a, b + 1, step) for m in mults]
    return [t for t in out if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]


def limits(values: Sequence[float] | np.ndarray, *, log: bool = False, include: Sequence[float] = (),
           pad: float = 0.05) -> tuple[float, float]:
    """Axis limits around the finite values (and ``include``), padded a little."""
    v = np.asarray([*np.asarray(values, dtype=np.float64).ravel(), *include], dtype=np.float64)
    v = v[np.isfinite(v)]
    if log:
        v = v[v > 0]
    if v.size == 0:
        return (0.1, 10.0) if log else (0.0, 1.0)
    lo, hi = float(v.min()), float(v.max())
    if log:
        if hi / lo < 1.2:
            lo, hi = lo / 1.2, hi * 1.2
        r = math.log10(hi / lo) * pad
        return lo / 10**r, hi * 10**r
    if hi - lo < 1e-12:
        span = max(abs(hi) * 0.1, 1e-3)
        return lo - span, hi + span
    span = hi - lo
    return lo - span * pad, hi + span * pad


class Axes:
    """A chart in a box of the canvas: data coordinates to pixels, ticks, lines."""

    def __init__(self, canvas: Canvas, box: tuple[int, int, int, int], *, xlim: tuple[float, float],
                 ylim: tuple[float, float], xlog: bool = False, ylog: bool = False, title: str = "",
                 xlabel: str = "", ylabel: str = "", xticks: Sequence[float] | None = None,
                 xticklabels: Sequence[str] | None = None) -> None:
        self.canvas = canvas
        x0, y0, x1, y1 = box
        # room for tick labels and axis labels inside the box
        self.left, self.top, self.right, self.bottom = x0 + 62, y0 + 26, x1 - 12, y1 - 44
        self.xlim, self.ylim, self.xlog, self.ylog = xlim, ylim, xlog, ylog
        d = canvas.draw
        d.rectangle((self.left, self.top, self.right, self.bottom), fill=WHITE, outline=GREY)
        yt = log_ticks(*ylim) if ylog else nice_ticks(*ylim)
        for t in yt:
            py = self.py(t)
            d.line((self.left, py, self.right, py), fill=LIGHT)
            d.line((self.left - 4, py, self.left, py), fill=GREY)
            d.text((self.left - 7, py), fmt(t), fill=BLACK, font=font(12), anchor="rm")
        if xticks is None:
            xticks = log_ticks(*xlim) if xlog else nice_ticks(*xlim)
        labels = list(xticklabels) if xticklabels is not None else [fmt(t) for t in xticks]
        for t, lab in zip(xticks, labels, strict=False):
            px = self.px(t)
            d.line((px, self.top, px, self.bottom), fill=LIGHT)
            d.line((px, self.bottom, px, self.bottom + 4), fill=GREY)
            d.text((px, self.bottom + 7), lab, fill=BLACK, font=font(12), anchor="mt")
        d.rectangle((self.left, self.top, self.right, self.bottom), outline=GREY)
        if title:
            d.text(((self.left + self.right) / 2, y0 + 6), title, fill=BLACK, font=font(14), anchor="mt")
        if xlabel:
            d.text(((self.left + self.right) / 2, y1 - 6), xlabel, fill=BLACK, font=font(13), anchor="mb")
        if ylabel:
            canvas.vertical_text((x0 + 4, (self.top + self.bottom) / 2), ylabel)

    def _frac(self, v: float, lim: tuple[float, float], log: bool) -> float:
        lo, hi = lim
        if log:
            v = max(v, 1e-300)
            return (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        return (v - lo) / (hi - lo)

    def px(self, x: float) -> float:
        return self.left + self._frac(x, self.xlim, self.xlog) * (self.right - self.left)

    def py(self, y: float) -> float:
        return self.bottom - self._frac(y, self.ylim, self.ylog) * (self.bottom - self.top)

    def _inside(self, x: float, y: float) -> bool:
        ok = math.isfinite(x) and math.isfinite(y) and not (self.xlog and x <= 0) and not (self.ylog and y <= 0)
        return ok

    def line(self, xs: Sequence[float], ys: Sequence[float], color: tuple[int, int, int], *, width: int = 2,
             dash: int = 0, markers: bool = False) -> None:
        """A polyline through the finite points (a gap where a value is missing), clipped to the box."""
        pts: list[tuple[float, float] | None] = []
        for x, y in zip(xs, ys, strict=True):
            x, y = float(x), float(y) if y is not None else math.nan
            pts.append((self.px(x), self.py(y)) if self._inside(x, y) else None)
        clip = self.canvas.clip(self)
        for a, b in zip(pts, pts[1:], strict=False):
            if a is not None and b is not None:
                if dash:
                    _dashed(clip, a, b, color, width, dash)
                else:
                    clip.line((a, b), fill=color, width=width)
        if markers or sum(p is not None for p in pts) == 1:
            for p in pts:
                if p is not None and self.top <= p[1] <= self.bottom:
                    clip.ellipse((p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3), fill=color)
        self.canvas.unclip(self)

    def hline(self, y: float, color: tuple[int, int, int] = GREY, dash: int = 6) -> None:
        if self._inside(self.xlim[0], y) and self.ylim[0] <= y <= self.ylim[1]:
            py = self.py(y)
            _dashed(self.canvas.draw, (self.left, py), (self.right, py), color, 1, dash)

    def bars(self, xs: Sequence[float], ys: Sequence[float], width: float, color: tuple[int, int, int]) -> None:
        """Bars from 0 (or the bottom of a log axis) to y, ``width`` in data units."""
        base = self.py(max(self.ylim[0], 0.0) if not self.ylog else self.ylim[0])
        for x, y in zip(xs, ys, strict=True):
            if not self._inside(x, y):
                continue
            a, b = self.px(x - width / 2), self.px(x + width / 2)
            py = min(max(self.py(y), self.top), self.bottom)
            self.canvas.draw.rectangle((a, min(base, py), max(a + 1, b), max(base, py)), fill=color)

    def dots(self, xs: Sequence[float], ys: Sequence[float], color: tuple[int, int, int], r: int = 4) -> None:
        """Markers alone at the finite points inside the box."""
        for x, y in zip(xs, ys, strict=True):
            if self._inside(x, y) and self.ylim[0] <= y <= self.ylim[1]:
                px, py = self.px(x), self.py(y)
                self.canvas.draw.ellipse((px - r, py - r, px + r, py + r), fill=color)

    def note(self, text: str, color: tuple[int, int, int] = GREY) -> None:
        self.canvas.draw.text((self.right - 6, self.top + 6), text, fill=color, font=font(12), anchor="ra")


def _dashed(draw: ImageDraw.ImageDraw, a, b, color, width: int, dash: int) -> None:
    (x0, y0), (x1, y1) = a, b
    n = math.hypot(x1 - x0, y1 - y0)
    if n == 0:
        return
    k = 0.0
    while k < n:
        e = min(k + dash, n)
        draw.line(((x0 + (x1 - x0) * k / n, y0 + (y1 - y0) * k / n), (x0 + (x1 - x0) * e / n, y0 + (y1 - y0) * e / n)),
                  fill=color, width=width)
        k += 2 * dash


class Canvas:
    """A white RGB picture to draw axes, legends and images on."""

    def __init__(self, width: int, height: int) -> None:
        self.image = Image.new("RGB", (int(width), int(height)), WHITE)
        self.draw = ImageDraw.Draw(self.image)
        self._layer: Image.Image | None = None

    def axes(self, box: tuple[int, int, int, int], **kw) -> Axes:
        return Axes(self, box, **kw)

    # lines are drawn on a layer and pasted inside the axes box, so nothing spills over the frame
    def clip(self, ax: Axes) -> ImageDraw.ImageDraw:
        self._layer = self.image.copy()
        return ImageDraw.Draw(self._layer)

    def unclip(self, ax: Axes) -> None:
        if self._layer is not None:
            box = (int(ax.left) + 1, int(ax.top) + 1, int(ax.right), int(ax.bottom))
            self.image.paste(self._layer.crop(box), box[:2])
            self._layer = None

    def text(self, xy: tuple[float, float], s: str, *, size: int = 13, color=BLACK, anchor: str = "la") -> None:
        self.draw.text(xy, s, fill=color, font=font(size), anchor=anchor)

    def vertical_text(self, xy: tuple[float, float], s: str, size: int = 13) -> None:
        f = font(size)
        x0, t, r, b = self.draw.textbbox((0, 0), s, font=f)
        im = Image.new("RGB", (r - x0 + 4, b - t + 4), WHITE)
        ImageDraw.Draw(im).text((2 - x0, 2 - t), s, fill=BLACK, font=f)
        im = im.rotate(90, expand=True)
        self.image.paste(im, (int(xy[0]), int(xy[1] - im.height / 2)))

    def legend(self, entries: Sequence[tuple[str, tuple[int, int, int]]], xy: tuple[float, float], *,
               dashes: Sequence[int] | None = None, max_chars: int = 48) -> int:
        """Coloured line samples with labels, one per row from ``xy``; returns the height used."""
        x, y = xy
        for i, (label, col) in enumerate(entries):
            dash = dashes[i] if dashes else 0
            if dash:
                _dashed(self.draw, (x, y + 8), (x + 26, y + 8), col, 3, dash)
            else:
                self.draw.line((x, y + 8, x + 26, y + 8), fill=col, width=3)
            text = label if len(label) <= max_chars else "..." + label[-(max_chars - 3):]
            self.text((x + 34, y + 1), text, size=13)
            y += 20
        return int(y - xy[1])

    def paste(self, rgb: np.ndarray, xy: tuple[int, int], *, fit: tuple[int, int] | None = None) -> tuple[int, int]:
        """Paste an (H, W, 3) image (float in [0, 1] or uint8), scaled to fit ``fit``; returns its size."""
        arr = rgb if rgb.dtype == np.uint8 else (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
        im = Image.fromarray(np.ascontiguousarray(arr))
        if fit is not None:
            s = min(fit[0] / im.width, fit[1] / im.height)
            size = (max(1, round(im.width * s)), max(1, round(im.height * s)))
            im = im.resize(size, Image.Resampling.NEAREST if s >= 2 else Image.Resampling.LANCZOS)
        self.image.paste(im, (int(xy[0]), int(xy[1])))
        return im.size

    def array(self) -> np.ndarray:
        """The picture as an (H, W, 3) uint8 array."""
        return np.asarray(self.image, dtype=np.uint8).copy()


def draw(analysis, results, pictures: Sequence = (), *, first_colour: int = 0) -> np.ndarray:
    """An analysis's figure (``describe.Analysis.figure``) of (label, numbers) pairs, with ``pictures``
    (``describe.Picture``) under it, as an (H, W, 3) uint8 picture: the PNG the CLI writes. The i-th result is
    drawn in palette colour ``first_colour + i`` (a report's VAE k draws its own figure in colour k)."""
    return draw_figure(analysis.figure(results), [label for label, _ in results], pictures, first_colour=first_colour)


def draw_figure(fig, labels: Sequence[str], pictures: Sequence = (), *, width: int = 1040,
                chart_height: int = 330, first_colour: int = 0) -> np.ndarray:
    """Draw a ``describe.Figure``: its charts in a grid, a legend of the VAEs, the pictures in a row."""
    cols = max(1, fig.columns)
    grid_rows = max(1, math.ceil(len(fig.charts) / cols))
    legend_h = 20 * max(1, len(labels)) + 12
    pic_h = 200 if pictures else 0
    head = 30
    height = head + grid_rows * chart_height + legend_h + (pic_h + 30 if pictures else 0)
    c = Canvas(width, height)
    c.text((width / 2, 6), fig.title, size=15, anchor="mt")
    cw = width // cols
    for k, chart in enumerate(fig.charts):
        x0, y0 = (k % cols) * cw, head + (k // cols) * chart_height
        _draw_chart(c, chart, (x0, y0, x0 + cw, y0 + chart_height - 20), first_colour)
        if chart.note:
            c.text((x0 + 70, y0 + chart_height - 20), chart.note, size=12, color=WARN if chart.warn else GREY)
    y = head + grid_rows * chart_height + 4
    c.legend([(label, colour(first_colour + i)) for i, label in enumerate(labels)], (70, y))
    if pictures:
        y += legend_h
        n = len(pictures)
        box_w = min(300, (width - 80) // n - 10)
        x = 70
        for p in pictures:
            w, h = c.paste(p.rgb, (x, y), fit=(box_w, pic_h))
            c.text((x, y + h + 4), p.caption[-40:], size=11)
            x += max(w, box_w) + 10
    return c.array()


def _draw_chart(c: Canvas, chart, box: tuple[int, int, int, int], first_colour: int = 0) -> None:
    xs = [v for s in chart.series for v in s.x]
    ys = [np.nan if v is None else v for s in chart.series for v in s.y]
    xlim = chart.xlim or limits(xs, pad=0.02)
    ticks = chart.xticks
    ax = c.axes(box, xlim=xlim, ylim=limits(ys, log=chart.logy, include=chart.include), ylog=chart.logy,
                title=chart.title, xlabel=chart.xlabel, ylabel=chart.ylabel,
                xticks=[t for t, _ in ticks] if ticks is not None else None,
                xticklabels=[lab for _, lab in ticks] if ticks is not None else None)
    for h in chart.hlines:
        ax.hline(h)
    for s in chart.series:
        col = REFERENCE if s.vae is None else colour(first_colour + s.vae)
        y = [np.nan if v is None else v for v in s.y]
        if s.style == "bars":
            ax.bars(list(s.x), y, 0.6, col)
        elif s.style == "dots":
            ax.dots(list(s.x), y, col)
        else:
            ax.line(list(s.x), y, col, width=s.width, dash=s.dash, markers=s.markers)


def png_base64(rgb: np.ndarray) -> str:
    """A picture as base64 PNG, for a data: URI in an HTML report."""
    import base64
    import io

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")
