"""An analysis's ``describe.Figure`` drawn with pyqtgraph: the window's counterpart of
``core.analyses.plotting.draw_figure`` (the CLI's PNG), from the same record, in the same colours."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt

from vaestudio.core.analyses.plotting import REFERENCE
from vaestudio.core.analyses.plotting import colour as palette_colour
from vaestudio.ui.plotting import IntegerAxis

GREY = (160, 160, 160)
DASHES = {0: Qt.PenStyle.SolidLine, 2: Qt.PenStyle.DotLine}  # other dash lengths: dashed


def draw_figure(layout: pg.GraphicsLayoutWidget, fig, labels: list[str]) -> pg.LegendItem:
    """Clear ``layout`` and draw ``fig`` in it: one legend above (one entry per VAE, so it never
    covers a curve), then the charts in the figure's columns, each note under its chart."""
    layout.clear()
    cols = max(1, fig.columns)
    legend = pg.LegendItem(colCount=4)
    layout.addItem(legend, row=0, col=0, colspan=cols)
    for i, label in enumerate(labels):
        legend.addItem(pg.PlotDataItem(pen=pg.mkPen(palette_colour(i), width=2)), label)
    for k, chart in enumerate(fig.charts):
        row, col = 1 + 2 * (k // cols), k % cols
        _chart(layout, chart, row, col)
        if chart.note:
            layout.addLabel(chart.note, row=row + 1, col=col, color="#be1e1e" if chart.warn else "#6e6e6e", size="9pt")
    return legend


def _chart(layout: pg.GraphicsLayoutWidget, chart, row: int, col: int) -> None:
    axes = {"bottom": IntegerAxis("bottom")} if chart.integer_x and chart.xticks is None else None
    p = layout.addPlot(row=row, col=col, title=chart.title, axisItems=axes)
    p.setLabel("bottom", chart.xlabel)
    p.setLabel("left", chart.ylabel)
    for side in ("bottom", "left"):
        p.getAxis(side).enableAutoSIPrefix(False)
    p.showGrid(x=True, y=True, alpha=0.2)
    if chart.logy:
        p.setLogMode(y=True)
    if chart.xticks is not None:
        p.getAxis("bottom").setTicks([[(float(t), lab) for t, lab in chart.xticks]])
    if chart.xlim is not None:
        p.setXRange(*chart.xlim, padding=0)
    for h in chart.hlines:
        pos = math.log10(h) if chart.logy else h  # a log axis is placed in log10 units
        p.addItem(pg.InfiniteLine(pos=pos, angle=0, pen=pg.mkPen(GREY, style=Qt.PenStyle.DashLine)))
    for s in chart.series:
        colour = REFERENCE if s.vae is None else palette_colour(s.vae)
        y = np.array([np.nan if v is None or not math.isfinite(v) else v for v in s.y], dtype=float)
        x = np.asarray(list(s.x), dtype=float)
        if s.style == "bars":
            p.addItem(pg.BarGraphItem(x=x, height=np.nan_to_num(y), width=0.6, brush=colour, pen=None))
        elif s.style == "dots":
            p.plot(x, y, pen=None, symbol="o", symbolSize=7, symbolBrush=colour, symbolPen=None)
        else:
            pen = pg.mkPen(colour, width=s.width, style=DASHES.get(s.dash, Qt.PenStyle.DashLine))
            p.plot(x, y, pen=pen, symbol="o" if s.markers else None, symbolSize=6, symbolBrush=colour,
                   symbolPen=None, connect="finite")
