"""The latent panel: every channel as a heat map in one mosaic, statistics, histogram, preview.

Built to stay legible and fast from 4 to 128+ channels: the channels are drawn as one image (a
mosaic laid out at the latent's aspect ratio, one colour scale or one per channel, sortable by
variance) rather than one plot per channel; the statistics table is a model/view table (only visible
rows are drawn) and sortable by any column; clicking a heat map selects its channel. The latent can
be shown as the VAE's raw output or in model space (what the diffusion model sees).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QRectF, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QColor, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGraphicsRectItem,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

BACKGROUND = (24, 24, 24)


class StatsModel(QAbstractTableModel):
    """Per-channel statistics; for a latent vector, one value per dimension."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: np.ndarray = np.zeros((0, 5))
        self.headers = ["channel", "mean", "std", "min", "max"]

    def set_latent(self, arr: np.ndarray | None) -> None:
        # imported here: torch is loaded by now, and the window starts without it
        from vaestudio.core.latents import channel_stats

        self.beginResetModel()
        if arr is None:
            self.rows = np.zeros((0, len(self.headers)))
        elif arr.shape[1:] == (1, 1):  # a vector: min = max = mean, std 0 would say nothing
            self.headers = ["dimension", "value"]
            self.rows = np.stack([np.arange(arr.shape[0]), arr[:, 0, 0]], axis=1)
        else:
            self.headers = ["channel", "mean", "std", "min", "max"]
            self.rows = np.column_stack([np.arange(arr.shape[0]), channel_stats(arr)])
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt API
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt API
        return len(self.headers)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        v = self.rows[index.row(), index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return str(int(v)) if index.column() == 0 else f"{v:.4f}"
        if role == Qt.ItemDataRole.UserRole:  # sort by the number, not the text
            return float(v)
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802 - Qt API
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.headers[section]
        return None


class LatentPanel(QWidget):
    """Shows a latent (C, h, w) in raw and model space; a vector (D,) is one 1 x D strip."""

    ablation_requested = Signal(int, float, str)  # channel, factor (0 = zero it), space ("raw" or "model")
    hovered = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.space = QComboBox()
        self.space.addItem("model space", "model")
        self.space.addItem("raw (encoder output)", "raw")
        self.space.setToolTip("Model space: the latent as the diffusion model sees it (scaled, normalised, "
                              "patchified). Raw: what the VAE's encoder outputs.")
        self.order = QComboBox()
        self.order.addItem("channel order", "channel")
        self.order.addItem("by variance", "variance")
        self.order.setToolTip("Order of the heat maps")
        self.shared = QCheckBox("One colour scale")
        self.shared.setChecked(True)
        self.shared.setToolTip("One colour scale for all channels (compare channels), or one per channel (see detail)")
        self.frame = QSlider(Qt.Orientation.Horizontal)  # a clip's latent frame (C, T', h, w): which one is shown
        self.frame.setToolTip("The latent frame shown: mosaic, statistics, histogram and preview")
        self.frame.setMinimumWidth(160)
        self.frame_label = QLabel("")
        self.clip_latents = None  # a clip's (model, raw, previews, note), (C, T', h, w) each
        self.caption = QLabel("")
        self.caption.setWordWrap(True)
        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground(BACKGROUND)
        self.view.setMinimumHeight(160)
        self.vb = self.view.addViewBox(row=0, col=0, lockAspect=True, invertY=True, enableMenu=False)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.vb.addItem(self.image)
        self.cmap = pg.colormap.get("viridis")
        self.lut = (self.cmap.getLookupTable(0.0, 1.0, 256, alpha=False)).astype(np.uint8)
        self.colorbar = pg.ColorBarItem(colorMap=self.cmap, interactive=False, width=12, values=(0, 1))
        self.view.addItem(self.colorbar, row=0, col=1)
        self.marker = QGraphicsRectItem()
        self.marker.setPen(QPen(QColor(255, 80, 80), 0))
        self.marker.hide()
        self.vb.addItem(self.marker)
        self.stats = StatsModel()
        self.proxy = QSortFilterProxyModel()
        self.proxy.setSourceModel(self.stats)
        self.proxy.setSortRole(Qt.ItemDataRole.UserRole)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(20)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.selectionModel().currentRowChanged.connect(self._row_selected)
        self.hist = pg.PlotWidget()
        self.hist.setMinimumHeight(120)
        self.hist.setLabel("bottom", "value")
        self.hist.setLabel("left", "count")
        self.hist_curve = self.hist.plot(stepMode="center", fillLevel=0, brush=(90, 140, 220, 150))
        self.preview = pg.GraphicsLayoutWidget()
        self.preview.setMinimumHeight(140)
        self.preview_vb = self.preview.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.preview_item = pg.ImageItem(axisOrder="row-major")
        self.preview_vb.addItem(self.preview_item)
        self.preview_label = QLabel("Latent-to-RGB preview (no decoder)")
        # channel ablation
        self.ab_channel = QSpinBox()
        self.ab_mode = QComboBox()
        self.ab_mode.addItems(["zero", "scale"])
        self.ab_factor = QDoubleSpinBox()
        self.ab_factor.setRange(-10, 10)
        self.ab_factor.setValue(2.0)
        self.ab_factor.setEnabled(False)
        self.ab_mode.currentIndexChanged.connect(lambda i: self.ab_factor.setEnabled(i == 1))
        self.ab_button = QPushButton("Decode with this change")
        self.ab_button.setToolTip("Zero or scale one latent channel and decode, to see what it carries")
        self.ab_button.clicked.connect(self._ablate)
        top = QHBoxLayout()
        for w in (QLabel("Show"), self.space, self.order, self.shared):
            top.addWidget(w)
        top.addStretch(1)
        top.addWidget(self.frame_label)
        top.addWidget(self.frame, 1)
        self.frame.hide()
        self.frame_label.hide()
        ab = QHBoxLayout()
        for w in (QLabel("Channel"), self.ab_channel, self.ab_mode, self.ab_factor, self.ab_button):
            ab.addWidget(w)
        ab.addStretch(1)
        left = QVBoxLayout()
        left.setContentsMargins(0, 0, 0, 0)
        left.addLayout(top)
        left.addWidget(self.caption)
        left.addWidget(self.view, 1)
        left.addLayout(ab)
        left_w = QWidget()
        left_w.setLayout(left)
        prev_w = QWidget()
        pl = QVBoxLayout(prev_w)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.addWidget(self.preview_label)
        pl.addWidget(self.preview, 1)
        side = QSplitter(Qt.Orientation.Vertical)
        side.addWidget(self.table)
        side.addWidget(self.hist)
        side.addWidget(prev_w)
        side.setStretchFactor(0, 2)
        side.setStretchFactor(1, 1)
        side.setStretchFactor(2, 2)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left_w)
        split.addWidget(side)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(split)
        self.latents: dict[str, np.ndarray] = {}
        self.arr: np.ndarray | None = None  # the latent shown, (C, h, w)
        self.mosaic = None
        self.selected = 0
        self.note = ""
        self._shapes = None
        self.space.currentIndexChanged.connect(self._redraw)
        self.order.currentIndexChanged.connect(self._redraw)
        self.shared.toggled.connect(self._redraw)
        self.frame.valueChanged.connect(self._show_frame)
        self.view.scene().sigMouseMoved.connect(self._moved)
        self.view.scene().sigMouseClicked.connect(self._clicked)

    # -- data -------------------------------------------------------------------------------------
    def set_clip_latents(self, model: np.ndarray | None, raw: np.ndarray | None = None, previews=None,
                         note: str = "") -> None:
        """Show a clip's latent (C, T', h, w): the latent-frame slider picks the frame whose mosaic,
        statistics, histogram and latent-to-RGB preview (``previews[i]``) are shown."""
        if model is None:
            if self.clip_latents is not None:
                self.set_latents(None)
            return
        self.set_latents(None)
        self.clip_latents = (model, raw, previews, note)
        self.ab_button.setEnabled(False)  # the ablation decodes an image's latent, not a clip's
        self.frame.setVisible(model.shape[1] > 1)
        self.frame_label.setVisible(True)
        self.frame.blockSignals(True)
        self.frame.setRange(0, model.shape[1] - 1)
        self.frame.setValue(min(self.frame.value(), model.shape[1] - 1))
        self.frame.blockSignals(False)
        self._show_frame()

    def _show_frame(self) -> None:
        if self.clip_latents is None:
            return
        model, raw, previews, note = self.clip_latents
        i, n = self.frame.value(), model.shape[1]
        self.frame_label.setText(f"latent frame {i} (0-{n - 1})")
        what = f"latent frame {i} (0-{n - 1})" + (f"; {note}" if note else "")
        self._set(model[:, i], None if raw is None else raw[:, i], what)
        preview = previews[i] if previews else None
        self.set_preview(preview, f"Latent-to-RGB preview of latent frame {i}")

    def set_latents(self, model: np.ndarray | None, raw: np.ndarray | None = None, note: str = "") -> None:
        """Show a latent in model space (and its raw form, when it differs). ``note`` says what it is
        (e.g. that noise is not shown)."""
        self.clip_latents = None
        self.ab_button.setEnabled(model is not None)  # nothing to change before a latent (a clip's is still encoding)
        self.frame.hide()
        self.frame_label.hide()
        self._set(model, raw, note)

    def _set(self, model: np.ndarray | None, raw: np.ndarray | None, note: str) -> None:
        if model is None:
            self.latents, self.arr, self.mosaic = {}, None, None
            self.image.clear()
            self.marker.hide()
            self.stats.set_latent(None)
            self.hist_curve.setData([], [])
            self.caption.setText("")
            self._shapes = None
            return
        model = np.asarray(model, np.float32)
        self.latents = {"model": model}
        differs = raw is not None and (raw.shape != model.shape or not np.array_equal(raw, model))
        if differs:
            self.latents["raw"] = np.asarray(raw, np.float32)
        self.note = note
        self.space.setEnabled(differs)
        shapes = (model.shape, None if raw is None else tuple(raw.shape))
        if shapes != self._shapes:
            # a new kind of latent: model space, unless it is a repacking of the raw latent (FLUX.2's
            # 128 patchified channels), where the VAE's own channels say more
            self._shapes = shapes
            repacked = differs and raw.shape[0] != model.shape[0]
            self.space.blockSignals(True)
            self.space.setCurrentIndex(1 if repacked else 0)
            self.space.blockSignals(False)
        self._redraw()

    def current_space(self) -> str:
        key = self.space.currentData()
        return key if key in self.latents else "model"

    def set_preview(self, preview: np.ndarray | None, title: str = "Latent-to-RGB preview (no decoder)") -> None:
        self.preview.setVisible(preview is not None)
        self.preview_label.setVisible(preview is not None)
        self.preview_label.setText(title)
        if preview is not None:
            self.preview_item.setImage(preview, levels=(0, 1), autoLevels=False)
            self.preview_vb.autoRange(padding=0)

    def channel_count(self) -> int:
        """Heat maps drawn: one per channel, or one strip for a latent vector."""
        if self.arr is None:
            return 0
        return 1 if self.arr.shape[1:] == (1, 1) else int(self.arr.shape[0])

    def _redraw(self) -> None:
        from vaestudio.core.pictures import channel_mosaic, channel_order

        if not self.latents:
            return
        arr = self.latents[self.current_space()]
        self.arr = arr[:, None, None] if arr.ndim == 1 else arr
        n = self.arr.shape[0]
        order = channel_order(self.arr, self.order.currentData())
        shared = self.shared.isChecked()
        self.mosaic = m = channel_mosaic(self.arr, shared=shared, order=order)
        gaps = np.isnan(m.values)
        rgb = self.lut[np.clip(np.nan_to_num(m.values) * 255 + 0.5, 0, 255).astype(np.uint8)]
        rgb[gaps] = BACKGROUND
        self.image.setImage(rgb, levels=(0, 255), autoLevels=False)
        self.vb.autoRange(padding=0.01)
        self.colorbar.setVisible(shared)
        if shared:
            lo, hi = float(m.levels[0, 0]), float(m.levels[0, 1])
            self.colorbar.setLevels((lo, hi if hi > lo else lo + 1e-6))
        vector = self.arr.shape[1:] == (1, 1)
        what = f"{n}-value latent vector" if vector else f"{n} channels of {self.arr.shape[1]} x {self.arr.shape[2]}"
        space = "model space" if self.current_space() == "model" else "raw"
        self.caption.setText(f"{what} ({space}){'; ' + self.note if self.note else ''}. "
                             "Click a heat map to select its channel.")
        self.ab_channel.setRange(0, n - 1)
        self.stats.set_latent(self.arr)
        self.select(min(self.selected, n - 1))

    def select(self, channel: int) -> None:
        """Select a channel: table row, histogram, ablation channel and the marker follow."""
        if self.arr is None:
            return
        self.selected = channel
        self.ab_channel.setValue(channel)
        vector = self.arr.shape[1:] == (1, 1)
        values = self.arr.reshape(-1) if vector else self.arr[channel].reshape(-1)
        counts, edges = np.histogram(values, bins=32)
        self.hist_curve.setData(edges, counts)
        self.hist.setTitle("histogram of the latent vector" if vector else f"histogram of channel {channel}")
        m = self.mosaic
        if m is not None and not vector:
            x, y = m.cell_origin(channel)
            self.marker.setRect(QRectF(x - 0.5, y - 0.5, m.cell_w + 1, m.cell_h + 1))
            self.marker.show()
        else:
            self.marker.hide()
        src = self.stats.index(channel, 0)
        view_idx = self.proxy.mapFromSource(src)
        if view_idx.isValid() and self.table.currentIndex().row() != view_idx.row():
            self.table.selectionModel().blockSignals(True)
            self.table.selectRow(view_idx.row())
            self.table.scrollTo(view_idx)
            self.table.selectionModel().blockSignals(False)

    def _row_selected(self, current, _previous) -> None:
        if current.isValid():
            src = self.proxy.mapToSource(current)
            self.select(int(self.stats.rows[src.row(), 0]))

    def _cell(self, pos):
        if self.mosaic is None or not self.vb.sceneBoundingRect().contains(pos):
            return None
        p = self.vb.mapSceneToView(pos)
        return self.mosaic.cell_at(np.floor(p.x()), np.floor(p.y()))

    def _moved(self, pos) -> None:
        cell = self._cell(pos)
        if cell is None:
            return
        c, x, y = cell
        v = self.arr[c, y, x]
        if self.arr.shape[1:] == (1, 1):
            self.hovered.emit(f"latent dimension {c}: {v:.4f}")
        else:
            self.hovered.emit(f"latent channel {c}  x={x} y={y}  {v:.4f}")

    def _clicked(self, event) -> None:
        cell = self._cell(event.scenePos())
        if cell is not None:
            self.select(cell[0])

    def _ablate(self) -> None:
        factor = 0.0 if self.ab_mode.currentText() == "zero" else self.ab_factor.value()
        self.ablation_requested.emit(self.ab_channel.value(), factor, self.current_space())
