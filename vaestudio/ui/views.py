"""Image views: original, reconstruction(s) and difference side by side, zoom and pan linked."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

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
    """Original (with a wipe), reconstruction, optional second reconstruction (B), difference."""

    hovered = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.original = ImagePane("Original")
        self.reconstruction = ImagePane("Reconstruction")
        self.reconstruction_b = ImagePane("Reconstruction B")
        self.difference = ImagePane("Difference")
        self.reconstruction_b.hide()
        row = QHBoxLayout()
        for pane in (self.original, self.reconstruction, self.reconstruction_b, self.difference):
            row.addWidget(pane, 1)
            pane.hovered.connect(self.hovered)
            if pane is not self.original:
                pane.vb.setXLink(self.original.vb)
                pane.vb.setYLink(self.original.vb)
        self.wipe_mode = QComboBox()
        self.wipe_mode.addItem("Wipe: reconstruction over original", "recon")
        self.wipe_mode.addItem("Wipe: B over A", "ab")
        self.wipe_mode.setToolTip("What the slider slides over what, in the first pane")
        self.wipe = QSlider(Qt.Orientation.Horizontal)
        self.wipe.setRange(0, 100)
        self.wipe.setValue(0)
        self.wipe.setToolTip("Slide to reveal one image over the other in the first pane")
        self.wipe.valueChanged.connect(self._update_wipe)
        self.wipe_mode.currentIndexChanged.connect(self._update_wipe)
        self.wipe_label = QLabel("Wipe: reconstruction over original")
        wipe_row = QHBoxLayout()
        wipe_row.addWidget(self.wipe_label)
        wipe_row.addWidget(self.wipe_mode)
        wipe_row.addWidget(self.wipe, 1)
        self.wipe_mode.hide()
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row, 1)
        lay.addLayout(wipe_row)
        self._orig: np.ndarray | None = None
        self._rec: np.ndarray | None = None
        self._rec_b: np.ndarray | None = None

    def set_original(self, rgb: np.ndarray | None) -> None:
        new_shape = self._orig is None or rgb is None or self._orig.shape != rgb.shape
        self._orig = rgb
        self._update_wipe()
        if new_shape:
            self.fit()

    def set_recon(self, rgb: np.ndarray | None, title: str = "Reconstruction") -> None:
        self._rec = rgb
        self.reconstruction.set_image(rgb)
        self.reconstruction.set_title(title)
        self._update_wipe()

    def set_recon_b(self, rgb: np.ndarray | None, title: str = "Reconstruction B") -> None:
        appeared = (rgb is not None) != self.reconstruction_b.isVisible()
        self._rec_b = rgb
        self.reconstruction_b.setVisible(rgb is not None)
        self.reconstruction_b.set_image(rgb)
        self.reconstruction_b.set_title(title)
        self.wipe_mode.setVisible(rgb is not None)
        self.wipe_label.setVisible(rgb is None)
        if rgb is None:
            self.wipe_mode.setCurrentIndex(0)
        self._update_wipe()
        if appeared:
            self.fit()

    def set_diff(self, rgb: np.ndarray | None) -> None:
        self.difference.set_image(rgb)

    def _update_wipe(self) -> None:
        o, k = self._orig, self.wipe.value()
        ab = self.wipe_mode.currentData() == "ab" and self._rec_b is not None
        base, top = (self._rec, self._rec_b) if ab else (o, self._rec)
        names = ("A", "B") if ab else ("original", "reconstruction")
        if o is None:
            self.original.set_image(None)
            return
        if base is None or top is None or top.shape != base.shape or k == 0:
            self.original.set_image(o)
            self.original.set_title("Original")
            return
        cut = int(round(base.shape[1] * k / 100))
        img = base.copy()
        img[:, :cut] = top[:, :cut]
        self.original.set_image(img)
        self.original.set_title(f"Wipe: {names[1]} | {names[0]} ({k}%)")

    def fit(self) -> None:
        self.original.vb.autoRange(padding=0.02)

    def one_to_one(self) -> None:
        """Show image pixels at screen pixels (1:1), centred where the view is now."""
        vb = self.original.vb
        w, h = vb.width(), vb.height()
        c = vb.viewRect().center()
        vb.setRange(xRange=(c.x() - w / 2, c.x() + w / 2), yRange=(c.y() - h / 2, c.y() + h / 2), padding=0)
