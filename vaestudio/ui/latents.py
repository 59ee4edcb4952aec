"""The latent panel: channel heatmaps with a shared colour bar, statistics, histogram, preview."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)


def _stats(arr: np.ndarray) -> list[tuple[float, float, float, float]]:
    return [(float(c.mean()), float(c.std()), float(c.min()), float(c.max())) for c in arr]


class LatentPanel(QWidget):
    """Shows a latent (C, h, w) array; a vector (D,) is shown as a 1 x D strip."""

    ablation_requested = Signal(int, float)  # channel, factor (0 = zero it)
    hovered = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.grid = pg.GraphicsLayoutWidget()
        self.grid.setMinimumHeight(220)
        self.shared = QCheckBox("One colour scale for all channels")
        self.shared.setChecked(True)
        self.shared.toggled.connect(self._redraw)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["mean", "std", "min", "max"])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.currentCellChanged.connect(lambda r, *_: self._show_hist(r))
        self.hist = pg.PlotWidget()
        self.hist.setMinimumHeight(130)
        self.hist.setLabel("bottom", "value")
        self.hist_curve = self.hist.plot(stepMode="center", fillLevel=0, brush=(90, 140, 220, 150))
        self.preview = pg.GraphicsLayoutWidget()
        self.preview.setMaximumHeight(160)
        self.preview_vb = self.preview.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.preview_item = pg.ImageItem(axisOrder="row-major")
        self.preview_vb.addItem(self.preview_item)
        self.preview_label = QLabel("Latent-to-RGB preview")
        # channel ablation
        self.ab_channel = QSpinBox()
        self.ab_mode = QComboBox()
        self.ab_mode.addItems(["zero", "scale"])
        self.ab_factor = QDoubleSpinBox()
        self.ab_factor.setRange(-10, 10)
        self.ab_factor.setValue(2.0)
        self.ab_button = QPushButton("Decode with ablation")
        self.ab_button.setToolTip("Zero or scale one latent channel and decode, to see what it carries")
        self.ab_button.clicked.connect(self._ablate)
        ab = QHBoxLayout()
        for w in (QLabel("Channel"), self.ab_channel, self.ab_mode, self.ab_factor, self.ab_button):
            ab.addWidget(w)
        ab.addStretch(1)
        side = QVBoxLayout()
        side.addWidget(self.table, 2)
        side.addWidget(self.hist, 1)
        side.addWidget(self.preview_label)
        side.addWidget(self.preview, 1)
        side_w = QWidget()
        side_w.setLayout(side)
        left = QVBoxLayout()
        left.addWidget(self.shared)
        left.addWidget(self.grid, 1)
        left.addLayout(ab)
        left_w = QWidget()
        left_w.setLayout(left)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left_w)
        split.addWidget(side_w)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(split)
        self.latent: np.ndarray | None = None
        self.items: list[pg.ImageItem] = []
        self.views: list[pg.ViewBox] = []
        self.colorbar: pg.ColorBarItem | None = None
        self.cmap = pg.colormap.get("viridis")
        self.grid.scene().sigMouseMoved.connect(self._moved)

    # -- data ---------------------------------------------------------------------------------
    def set_latent(self, latent: np.ndarray | None, preview: np.ndarray | None = None) -> None:
        if latent is None:
            self.latent = None
            self.grid.clear()
            self.items, self.views, self.colorbar = [], [], None
            self.table.setRowCount(0)
            return
        arr = np.asarray(latent, np.float32)
        self.latent = arr[None, None, :] if arr.ndim == 1 else arr  # a vector becomes one 1 x D map
        self.ab_channel.setRange(0, arr.shape[0] - 1)
        self._build_grid()
        self._redraw()
        self._fill_table(arr if arr.ndim == 3 else arr[:, None, None])
        self.set_preview(preview)

    def set_preview(self, preview: np.ndarray | None) -> None:
        self.preview.setVisible(preview is not None)
        self.preview_label.setVisible(preview is not None)
        if preview is not None:
            self.preview_item.setImage(preview, levels=(0, 1), autoLevels=False)
            self.preview_vb.autoRange(padding=0)

    def channel_count(self) -> int:
        return len(self.items)

    def _build_grid(self) -> None:
        n = self.latent.shape[0]
        if len(self.items) == n and self.items and self.items[0].image is not None and \
                self.items[0].image.shape == self.latent.shape[1:]:
            return
        self.grid.clear()
        self.items, self.views = [], []
        cols = max(1, math.ceil(math.sqrt(n))) if self.latent.shape[1] > 1 else 1
        for c in range(n):
            r, k = divmod(c, cols)
            vb = self.grid.addViewBox(row=2 * r + 1, col=k, lockAspect=True, invertY=True, enableMenu=False)
            self.grid.addLabel(f"ch {c}" if n > 1 else "latent vector", row=2 * r, col=k)
            item = pg.ImageItem(axisOrder="row-major")
            item.setColorMap(self.cmap)
            vb.addItem(item)
            if self.views:
                vb.setXLink(self.views[0])
                vb.setYLink(self.views[0])
            self.items.append(item)
            self.views.append(vb)
        self.colorbar = pg.ColorBarItem(colorMap=self.cmap, interactive=False, width=14)
        self.grid.addItem(self.colorbar, row=1, col=cols, rowspan=2 * math.ceil(n / cols))

    def _redraw(self) -> None:
        if self.latent is None:
            return
        shared = self.shared.isChecked()
        lo, hi = float(self.latent.min()), float(self.latent.max())
        for c, item in enumerate(self.items):
            ch = self.latent[c]
            levels = (lo, hi) if shared else (float(ch.min()), float(ch.max()))
            if levels[0] == levels[1]:
                levels = (levels[0] - 1e-6, levels[1] + 1e-6)
            item.setImage(ch, levels=levels, autoLevels=False)
        if self.colorbar is not None:
            self.colorbar.setVisible(shared)
            self.colorbar.setLevels((lo, hi))
        if self.views:
            self.views[0].autoRange(padding=0)

    def _fill_table(self, arr: np.ndarray) -> None:
        rows = _stats(arr)
        self.table.setRowCount(len(rows))
        self.table.setVerticalHeaderLabels([str(i) for i in range(len(rows))])
        for r, vals in enumerate(rows):
            for c, v in enumerate(vals):
                item = QTableWidgetItem(f"{v:.4f}")
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                self.table.setItem(r, c, item)
        self._show_hist(max(0, self.table.currentRow()))

    def _show_hist(self, row: int) -> None:
        if self.latent is None or row < 0:
            return
        vector = self.latent.shape[:2] == (1, 1)  # an MNIST latent, shown as one 1 x D strip
        values = self.latent.reshape(-1) if vector else self.latent[min(row, self.latent.shape[0] - 1)].reshape(-1)
        counts, edges = np.histogram(values, bins=32)
        self.hist_curve.setData(edges, counts)
        self.hist.setTitle("histogram of the latent vector" if vector else f"histogram of channel {row}")

    def _moved(self, pos) -> None:
        for c, vb in enumerate(self.views):
            if vb.sceneBoundingRect().contains(pos):
                p = vb.mapSceneToView(pos)
                x, y = int(np.floor(p.x())), int(np.floor(p.y()))
                ch = self.latent[c]
                if 0 <= y < ch.shape[0] and 0 <= x < ch.shape[1]:
                    what = f"dim {x}" if self.latent.shape[0] == 1 and ch.shape[0] == 1 else f"ch {c} x={x} y={y}"
                    self.hovered.emit(f"latent {what}: {ch[y, x]:.4f}")
                return

    def _ablate(self) -> None:
        factor = 0.0 if self.ab_mode.currentText() == "zero" else self.ab_factor.value()
        self.ablation_requested.emit(self.ab_channel.value(), factor)
