"""The MNIST studio's plots and pictures: loss per step and per epoch, digits, samples, PCA, exploration;
``picture`` (a captioned image) is the fine-tune's gallery too."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QVBoxLayout, QWidget

from vaestudio.core.analyses.plotting import PALETTE
from vaestudio.ui.plotting import IntegerAxis

EPOCH_CURVES = (("train", "train_loss", (90, 140, 220)), ("held-out", "heldout_loss", (230, 120, 40)),
                ("reconstruction (BCE)", "recon", (80, 180, 80)), ("KL", "kl", (200, 80, 160)))


def step_plot(layout: pg.GraphicsLayout, title: str, ylabel: str) -> pg.PlotItem:
    """A per-step curve's plot at the layout's top left: long runs are clipped to the view and downsampled."""
    plot = layout.addPlot(row=0, col=0, title=title)
    plot.setLabel("bottom", "step")
    plot.setLabel("left", ylabel)
    plot.setClipToView(True)
    plot.setDownsampling(auto=True, mode="peak")
    return plot


def picture(layout: pg.GraphicsLayout, row: int, col: int, caption: str, rowspan: int = 1):
    """A caption directly above a picture, as one unit."""
    inner = layout.addLayout(row=row, col=col, rowspan=rowspan)
    label = inner.addLabel(caption, row=0, col=0)
    vb = inner.addViewBox(row=1, col=0, lockAspect=True, invertY=True, enableMenu=False)
    item = pg.ImageItem(axisOrder="row-major")
    vb.addItem(item)
    inner.layout.setRowStretchFactor(0, 0)
    inner.layout.setRowStretchFactor(1, 1)
    return label, vb, item


class TrainingPlots(QWidget):
    def __init__(self) -> None:
        super().__init__()
        self.view = pg.GraphicsLayoutWidget()
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.view)
        g = self.view.ci
        self.step_plot = step_plot(g, "loss per step (smoothed)", "nats per image")
        self.step_curve = self.step_plot.plot(pen=pg.mkPen((90, 140, 220), width=1.5))
        epoch_box = g.addLayout(row=0, col=1)
        self.epoch_legend = pg.LegendItem(colCount=4)
        epoch_box.addItem(self.epoch_legend, row=0, col=0)
        self.epoch_plot = epoch_box.addPlot(row=1, col=0, title="per epoch",
                                            axisItems={"bottom": IntegerAxis("bottom")})
        self.epoch_plot.setLabel("bottom", "epoch")
        self.epoch_plot.setLabel("left", "nats per image")
        epoch_box.layout.setRowStretchFactor(1, 1)
        self.curves = {}
        for name, _attr, colour in EPOCH_CURVES:
            c = self.epoch_plot.plot(pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=5,
                                     symbolBrush=colour, symbolPen=None)
            self.epoch_legend.addItem(c, name)
            self.curves[name] = c
        self.recon_label, self.recon_vb, self.recon_img = picture(g, 1, 0, "held-out digits (top), reconstructed")
        self.samples_label, self.samples_vb, self.samples_img = picture(g, 1, 1, "samples from the prior N(0, I)")
        pca_box = g.addLayout(row=2, col=0)
        self.pca_legend = pg.LegendItem(colCount=5)
        pca_box.addItem(self.pca_legend, row=0, col=0)
        self.pca_plot = pca_box.addPlot(row=1, col=0, title="held-out latents (PCA), coloured by digit")
        self.pca_plot.setLabel("bottom", "component 1")
        self.pca_plot.setLabel("left", "component 2")
        pca_box.layout.setRowStretchFactor(1, 1)
        # one scatter item per label, each with one brush: restyling 2000 points one by one held the
        # GIL for ~150 ms per epoch and slowed training by a fifth
        self.pca_scatters = []
        for k in range(11):
            colour = PALETTE[k] if k < 10 else (150, 150, 150)
            item = pg.ScatterPlotItem(size=4, pen=None, brush=pg.mkBrush(*colour, 160))
            self.pca_plot.addItem(item)
            self.pca_scatters.append(item)
            if k < 10:
                self.pca_legend.addItem(pg.ScatterPlotItem(size=8, pen=None, brush=pg.mkBrush(*colour)), str(k))
        self.explore_label, self.explore_vb, self.explore_img = picture(
            g, 2, 1, "interpolation / traversal (use Explore on the left)")
        self.step_x: list[float] = []
        self.step_y: list[float] = []
        self.ema: float | None = None
        self.history: list = []

    def reset(self) -> None:
        self.step_x, self.step_y, self.ema, self.history = [], [], None, []
        self.step_curve.setData([], [])
        for c in self.curves.values():
            c.setData([], [])

    def set_history(self, history: list) -> None:
        self.history = list(history)
        self._draw_epochs()

    def add_steps(self, records) -> None:
        for r in records:
            self.ema = r.loss if self.ema is None else 0.95 * self.ema + 0.05 * r.loss
            self.step_x.append(r.step)
            self.step_y.append(self.ema)
        self.step_curve.setData(self.step_x, self.step_y)

    def add_epoch(self, rec, pics) -> None:
        self.history.append(rec)
        self._draw_epochs()
        self.recon_img.setImage(pics.recon_grid, levels=(0, 1), autoLevels=False)
        self.recon_vb.autoRange(padding=0)
        known = [str(x) for x in pics.recon_labels if x >= 0]
        self.recon_label.setText("held-out digits " + (" ".join(known) if known else "") + " (top), reconstructed")
        self.samples_img.setImage(pics.samples, levels=(0, 1), autoLevels=False)
        self.samples_vb.autoRange(padding=0)
        labels = np.where(pics.labels >= 0, pics.labels % 10, 10)
        for k, item in enumerate(self.pca_scatters):
            item.setData(pos=pics.pca[labels == k])

    def _draw_epochs(self) -> None:
        xs = [r.epoch for r in self.history]
        for name, attr, _colour in EPOCH_CURVES:
            self.curves[name].setData(xs, [getattr(r, attr) for r in self.history])

    def show_strip(self, strip: np.ndarray, caption: str) -> None:
        self.explore_img.setImage(strip, levels=(0, 1), autoLevels=False)
        self.explore_vb.autoRange(padding=0)
        self.explore_label.setText(caption)
