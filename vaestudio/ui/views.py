"""Image views: original, reconstruction(s) and difference side by side, zoom and pan linked."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)


class ImagePane(pg.GraphicsLayoutWidget):
    """One titled image in a ViewBox; emits the pixel under the cursor."""

    hovered = Signal(str)

    def __init__(self, title: str) -> None:
        super().__init__()
        self.setMinimumSize(160, 160)
        self.title = self.addLabel(title, row=0, col=0)
        self.vb = self.addViewBox(row=1, col=0, lockAspect=True, invertY=True, enableMenu=False)
        self.item = pg.ImageItem(axisOrder="row-major")
        self.vb.addItem(self.item)
        self.data: np.ndarray | None = None
        self.scene().sigMouseMoved.connect(self._moved)

    def set_title(self, text: str) -> None:
        self.title.setText(text)

    def set_image(self, rgb: np.ndarray | None, levels=(0.0, 1.0)) -> None:
        self.data = rgb
        if rgb is None:
            self.item.clear()
            return
        self.item.setImage(rgb, levels=levels, autoLevels=False)

    def _moved(self, pos) -> None:
        if self.data is None or not self.vb.sceneBoundingRect().contains(pos):
            return
        p = self.vb.mapSceneToView(pos)
        x, y = int(np.floor(p.x())), int(np.floor(p.y()))
        h, w = self.data.shape[:2]
        if 0 <= x < w and 0 <= y < h:
            v = self.data[y, x]
            vals = " ".join(f"{c:.3f}" for c in np.atleast_1d(v)[:3])
            self.hovered.emit(f"{self.title.text}  x={x} y={y}  {vals}")


class ImageCompare(QWidget):
    """Original (with an A/B wipe), reconstruction, optional second reconstruction, difference."""

    hovered = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.original = ImagePane("Original")
        self.recon = ImagePane("Reconstruction")
        self.recon_b = ImagePane("Reconstruction B")
        self.diff = ImagePane("Difference")
        self.recon_b.hide()
        row = QHBoxLayout()
        for pane in (self.original, self.recon, self.recon_b, self.diff):
            row.addWidget(pane, 1)
            pane.hovered.connect(self.hovered)
            if pane is not self.original:
                pane.vb.setXLink(self.original.vb)
                pane.vb.setYLink(self.original.vb)
        self.wipe = QSlider(Qt.Orientation.Horizontal)
        self.wipe.setRange(0, 100)
        self.wipe.setValue(0)
        self.wipe.setToolTip("A/B wipe: slide to reveal the reconstruction over the original")
        self.wipe.valueChanged.connect(self._update_wipe)
        wipe_row = QHBoxLayout()
        wipe_row.addWidget(QLabel("A/B wipe"))
        wipe_row.addWidget(self.wipe, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row, 1)
        lay.addLayout(wipe_row)
        self._orig: np.ndarray | None = None
        self._rec: np.ndarray | None = None

    def set_original(self, rgb: np.ndarray | None) -> None:
        first = self._orig is None or rgb is None or self._orig.shape != rgb.shape
        self._orig = rgb
        self._update_wipe()
        if first:
            self.fit()

    def set_recon(self, rgb: np.ndarray | None, title: str = "Reconstruction") -> None:
        self._rec = rgb
        self.recon.set_image(rgb)
        self.recon.set_title(title)
        self._update_wipe()

    def set_recon_b(self, rgb: np.ndarray | None, title: str = "Reconstruction B") -> None:
        self.recon_b.setVisible(rgb is not None)
        self.recon_b.set_image(rgb)
        self.recon_b.set_title(title)

    def set_diff(self, rgb: np.ndarray | None) -> None:
        self.diff.set_image(rgb)

    def _update_wipe(self) -> None:
        o, r = self._orig, self._rec
        k = self.wipe.value()
        if o is None:
            self.original.set_image(None)
            return
        if r is None or r.shape != o.shape or k == 0:
            self.original.set_image(o)
            self.original.set_title("Original")
            return
        cut = int(round(o.shape[1] * k / 100))
        img = o.copy()
        img[:, :cut] = r[:, :cut]
        self.original.set_image(img)
        self.original.set_title(f"A/B: reconstruction | original ({k}%)")

    def fit(self) -> None:
        self.original.vb.autoRange(padding=0.02)

    def one_to_one(self) -> None:
        """Show image pixels at screen pixels (1:1), centred where the view is now."""
        vb = self.original.vb
        w, h = vb.width(), vb.height()
        c = vb.viewRect().center()
        vb.setRange(xRange=(c.x() - w / 2, c.x() + w / 2), yRange=(c.y() - h / 2, c.y() + h / 2), padding=0)
