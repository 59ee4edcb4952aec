"""The fine-tune's plots: the training loss per step, held-out PSNR per checkpoint against the base's,
and the before | after | original gallery of held-out images (refreshed at each validation)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QVBoxLayout, QWidget

from vaestudio.ui.training.plots import picture, step_plot

GAP = 4  # white pixels between the gallery's pictures
GALLERY_CAPTION = "held-out images: before (the base) | after (step {}) | original"


def gallery_sheet(gallery) -> np.ndarray:
    """One picture: a row per held-out image, before | after | original, white gaps."""
    from vaestudio.core.pictures import comparison_strip  # imports torch: not while the window is built

    rows = [comparison_strip(b, c, o, gap=GAP)
            for b, c, o in zip(gallery.base, gallery.current, gallery.original, strict=True)]
    out = []
    for i, r in enumerate(rows):
        out.append(r)
        if i < len(rows) - 1:
            out.append(np.ones((GAP, r.shape[1], 3), np.float32))
    return np.concatenate(out, axis=0)


class FinetunePlots(QWidget):
    def __init__(self) -> None:
        super().__init__()
        self.view = pg.GraphicsLayoutWidget()
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.view)
        g = self.view.ci
        self.loss_plot = step_plot(g, "training loss per step", "loss")
        self.loss_legend = self.loss_plot.addLegend(offset=(-10, 10))
        self.raw_curve = self.loss_plot.plot(pen=pg.mkPen((90, 140, 220, 90), width=1), name="each step")
        self.loss_curve = self.loss_plot.plot(pen=pg.mkPen((90, 140, 220), width=2), name="smoothed")
        self.psnr_plot = g.addPlot(row=1, col=0, title="held-out PSNR at each checkpoint")
        self.psnr_plot.setLabel("bottom", "step")
        self.psnr_plot.setLabel("left", "PSNR (dB)")
        self.psnr_legend = self.psnr_plot.addLegend(offset=(-10, -10))
        self.psnr_curve = self.psnr_plot.plot(pen=pg.mkPen((230, 120, 40), width=2), symbol="o", symbolSize=6,
                                              symbolBrush=(230, 120, 40), symbolPen=None, name="fine-tune")
        self.base_curve = self.psnr_plot.plot(pen=pg.mkPen((150, 150, 150), width=1.5, style=pg.QtCore.Qt.DashLine),
                                              name="base VAE")
        self.gallery_label, self.gallery_vb, self.gallery_img = picture(g, 0, 1, GALLERY_CAPTION.format("-"), rowspan=2)
        self.reset()

    def reset(self) -> None:
        self.step_x: list[float] = []
        self.step_raw: list[float] = []
        self.step_y: list[float] = []
        self.ema: float | None = None
        self.psnr_x: list[float] = []
        self.psnr_y: list[float] = []
        self.base_psnr: float | None = None
        self.gallery: np.ndarray | None = None
        for c in (self.raw_curve, self.loss_curve, self.psnr_curve, self.base_curve):
            c.setData([], [])
        self.gallery_img.clear()
        self.gallery_label.setText(GALLERY_CAPTION.format("-"))

    def add_step(self, step: int, loss: float) -> None:
        self.ema = loss if self.ema is None else 0.9 * self.ema + 0.1 * loss
        self.step_x.append(step)
        self.step_raw.append(loss)
        self.step_y.append(self.ema)
        self.raw_curve.setData(self.step_x, self.step_raw)
        self.loss_curve.setData(self.step_x, self.step_y)

    def add_validation(self, event) -> None:
        psnr = event.current.get("psnr")
        if psnr is not None:
            self.psnr_x.append(event.step)
            self.psnr_y.append(psnr)
            self.psnr_curve.setData(self.psnr_x, self.psnr_y)
        if event.base.get("psnr") is not None:
            self.base_psnr = event.base["psnr"]
        if self.base_psnr is not None and self.psnr_x:
            self.base_curve.setData([0, max(self.psnr_x)], [self.base_psnr] * 2)
        if event.gallery is not None and len(event.gallery.current):
            self.gallery = gallery_sheet(event.gallery)
            self.gallery_img.setImage(self.gallery, levels=(0, 1), autoLevels=False)
            self.gallery_vb.autoRange(padding=0)
            self.gallery_label.setText(GALLERY_CAPTION.format(event.step))
