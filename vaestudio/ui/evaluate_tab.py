"""The Evaluate tab: score VAEs on whole folders of images, with the same core as ``vaestudio evaluate``.

The evaluation is one generator job (``vaestudio.core.evaluate.evaluate``) that streams rows as
they are committed: a live histogram of PSNR per VAE fills as they arrive, the progress bar shows
images/s and the time left, and at the end the summary table, the worst images (double-click one
to open it in the inspector with that VAE) and the report. Cancel keeps what is done; Resume goes
on from there.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from vaestudio.core.analyses.plotting import colour
from vaestudio.core.filetypes import IMAGE_SUFFIXES, file_filter
from vaestudio.ui.evaluate_job import default_out_dir, evaluate_job
from vaestudio.ui.session import Session, wire
from vaestudio.ui.vae_checklist import VaeChecklist

SUMMARY_COLUMNS = (("VAE", "vae"), ("images", "images"), ("failed", "failed"), ("PSNR", "psnr_mean"),
                   ("PSNR (dataset)", "psnr_dataset"), ("SSIM", "ssim_mean"), ("LPIPS", "lpips_mean"),
                   ("rFID", "rfid"))


class EvaluateTab(QWidget):
    open_in_inspector = Signal(str, str)  # image path, VAE source

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.data_list = QListWidget()
        self.data_list.setToolTip("Folders (searched recursively), image files, or .txt files listing paths")
        self.add_folder_btn = QPushButton("Add folder...")
        self.add_files_btn = QPushButton("Add files...")
        self.remove_btn = QPushButton("Remove")
        self.vae_list = VaeChecklist(session, "Tick the VAEs to evaluate; each is scored on the same images")
        self.add_vae_btn = QPushButton("Add VAE file...")
        self.out = QLineEdit()
        self.out_proposed = False  # a folder of ours (a fresh one after each run), not one the user chose
        self.out.textChanged.connect(self._out_changed)
        self._propose_out()
        self.out.setToolTip("rows.csv, summary.json and report.html are written here; Resume continues a run here")
        self.out_btn = QPushButton("Browse...")
        self.size = QSpinBox()
        self.size.setRange(0, 4096)
        self.size.setSingleStep(64)
        self.size.setValue(256)
        self.size.setSpecialValueText("own size")
        self.size.setToolTip("Shorter side resized to N and centre-cropped NxN, as VAE model cards report; "
                             "'own size' keeps each image's size")
        self.limit = QSpinBox()
        self.limit.setRange(0, 10_000_000)
        self.limit.setSpecialValueText("all")
        self.batch = QSpinBox()
        self.batch.setRange(1, 256)
        self.batch.setValue(8)
        self.metric_boxes = {}
        metrics_row = QHBoxLayout()
        from vaestudio.core.evaluate.types import KNOWN_METRICS

        for m in KNOWN_METRICS:
            box = QCheckBox("rFID" if m == "fid" else m.upper() if m != "color" else "colour")
            box.setChecked(True)
            self.metric_boxes[m] = box
            metrics_row.addWidget(box)
        self.start_btn = QPushButton("Start")
        self.cancel_btn = QPushButton("Cancel")
        self.resume_btn = QPushButton("Resume")
        self.resume_btn.setToolTip("Continue the run in the output folder, skipping what is done")
        self.cancel_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        box = QGroupBox("Evaluate VAEs on many images")
        form = QFormLayout(box)
        form.addRow(QLabel("Images"))
        form.addRow(self.data_list)
        data_row = QHBoxLayout()
        for b in (self.add_folder_btn, self.add_files_btn, self.remove_btn):
            data_row.addWidget(b)
        form.addRow(data_row)
        form.addRow(QLabel("VAEs"))
        form.addRow(self.vae_list)
        form.addRow(self.add_vae_btn)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out, 1)
        out_row.addWidget(self.out_btn)
        form.addRow("Output", out_row)
        form.addRow("Size", self.size)
        form.addRow("Limit", self.limit)
        form.addRow("Batch size", self.batch)
        form.addRow(metrics_row)
        buttons = QHBoxLayout()
        for b in (self.start_btn, self.cancel_btn, self.resume_btn):
            buttons.addWidget(b)
        form.addRow(buttons)
        form.addRow(self.progress)
        form.addRow(self.status)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(box)
        ll.addStretch(1)
        left.setFixedWidth(420)
        self.hist = pg.PlotWidget(title="PSNR per image, as rows arrive")
        self.hist.setLabel("bottom", "PSNR (dB)")
        self.hist.setLabel("left", "images")
        self.hist.addLegend(offset=(10, 10))
        self.summary = QTableWidget(0, len(SUMMARY_COLUMNS))
        self.summary.setHorizontalHeaderLabels([c[0] for c in SUMMARY_COLUMNS])
        self.summary.verticalHeader().hide()
        self.summary.setToolTip("Means over the images; PSNR (dataset) from the dataset-wide MSE; rFID between "
                                "the originals and the reconstructions (hover a dash for why it is missing)")
        self.worst = QListWidget()
        self.worst.setToolTip("Double-click to open the image in the inspector with that VAE")
        self.report_btn = QPushButton("Open report")
        self.report_btn.setEnabled(False)
        worst_box = QWidget()
        wl = QVBoxLayout(worst_box)
        wl.setContentsMargins(0, 0, 0, 0)
        wl.addWidget(QLabel("Worst images (lowest PSNR) per VAE; double-click to inspect"))
        wl.addWidget(self.worst, 1)
        wl.addWidget(self.report_btn)
        lower = QSplitter(Qt.Orientation.Horizontal)
        lower.addWidget(self.summary)
        lower.addWidget(worst_box)
        lower.setStretchFactor(0, 2)
        lower.setStretchFactor(1, 1)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.hist)
        right.addWidget(lower)
        lay = QHBoxLayout(self)
        lay.addWidget(left)
        lay.addWidget(right, 1)
        self.rows: dict[str, list] = {}  # VAE name -> rows
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.outputs: dict = {}
        self._last_draw = 0.0
        self.add_folder_btn.clicked.connect(self._add_folder)
        self.add_files_btn.clicked.connect(self._add_files)
        self.remove_btn.clicked.connect(lambda: [self.data_list.takeItem(self.data_list.row(i))
                                                 for i in self.data_list.selectedItems()])
        self.add_vae_btn.clicked.connect(lambda: self.vae_list.pick_file("Add a VAE to evaluate"))
        self.out_btn.clicked.connect(self._pick_out)
        self.start_btn.clicked.connect(lambda: self.start(resume=False))
        self.resume_btn.clicked.connect(lambda: self.start(resume=True))
        self.cancel_btn.clicked.connect(lambda: self.session.runner.cancel("evaluate"))
        self.report_btn.clicked.connect(self.open_report)
        self.worst.itemDoubleClicked.connect(self._inspect)
        self._guessed_data: str | None = None  # the inspected image's folder, offered until the user adds data
        self._session_connected = False
        self._connect_session(True)
        self._image_changed()

    def _connect_session(self, connect: bool) -> None:
        if connect == self._session_connected:  # closing twice lets go once
            return
        self._session_connected = connect
        self.vae_list.connect_session(connect)
        wire([(self.session.image_changed, self._image_changed)], connect)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self._connect_session(False)
        super().closeEvent(event)

    def _image_changed(self) -> None:
        """The folder of the image being inspected is a first guess at the data, until the user chooses."""
        src = self.session.source()
        if self.session.image is None or not isinstance(src, str):
            return
        if self.data_paths() in ([], [self._guessed_data]):
            self.data_list.clear()
            self._guessed_data = str(Path(src).parent)
            self.add_data(self._guessed_data)

    def _propose_out(self) -> None:
        self.out.setText(str(default_out_dir()))
        self.out_proposed = True  # after setText: its textChanged marks every other change as the user's

    def _out_changed(self, _text: str) -> None:
        self.out_proposed = False

    # -- choices ------------------------------------------------------------------------------------
    def add_data(self, path: str) -> None:
        if path not in self.data_paths():
            item = QListWidgetItem(f"{Path(path).name}   ({Path(path).parent})")
            item.setData(Qt.ItemDataRole.UserRole, path)
            item.setToolTip(path)
            self.data_list.addItem(item)

    def data_paths(self) -> list[str]:
        return [self.data_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.data_list.count())]

    def _add_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "A folder of images (searched recursively)")
        if path:
            self.add_data(path)

    def _add_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(
            self, "Images, or .txt files listing image paths", "",
            file_filter("Images and lists", IMAGE_SUFFIXES | {".txt"}))
        for p in paths:
            self.add_data(p)

    def _pick_out(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Output folder", str(Path(self.out.text()).parent))
        if path:
            self.out.setText(path)

    def add_vae(self, source: str) -> None:
        self.vae_list.add_file(source)

    def settings(self, resume: bool) -> dict:
        """The request's fields, read from the controls on the UI thread (the worker builds it)."""
        data = self.data_paths()
        vaes = [source for _label, source in self.vae_list.chosen()]
        preloaded = {s: v for s, v in self.session.lent_vaes().items() if s in vaes}
        prefs = self.session.prefs
        return dict(
            data=data, vaes=vaes, out=Path(self.out.text()).expanduser(), size=self.size.value(),
            limit=self.limit.value() or None, batch_size=self.batch.value(), device=prefs.device,
            dtype=prefs.dtype, tile=prefs.tile,
            metrics=[m for m, b in self.metric_boxes.items() if b.isChecked()] or ["psnr"], resume=resume,
            preloaded=preloaded)

    # -- running ------------------------------------------------------------------------------------
    def start(self, resume: bool = False) -> None:
        if self.data_list.count() == 0:
            self.session.error.emit("add a folder or image files to evaluate on")
            return
        req = self.settings(resume)
        if not req["vaes"]:
            self.session.error.emit("tick at least one VAE (load one in the Inspector, or Add VAE file...)")
            return
        self.rows, self.outputs = {}, {}
        self.hist.clear()
        self.hist.addLegend(offset=(10, 10))
        self.curves = {}
        self.summary.setRowCount(0)
        self.worst.clear()
        self.report_btn.setEnabled(False)
        self.progress.setRange(0, 0)
        self.status.setText("Resuming ..." if resume else "Starting ...")
        self._set_running(True)
        self.session.runner.start("evaluate", evaluate_job, req, on_yield=self._on_event, on_result=lambda _r: None,
                          on_error=self._failed, on_cancel=self._cancelled)

    def _set_running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        self.resume_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)

    def _on_event(self, ev) -> None:
        from vaestudio.core.evaluate import Finished, Progress, Row, Started, VaeLoadFailed, VaeSummary

        if isinstance(ev, Started):
            done = f", {ev.resumed_rows} rows already done" if ev.resumed_rows else ""
            self.status.setText(f"{ev.images} images x {len(ev.vaes)} VAEs{done}")
            self.progress.setRange(0, max(1, ev.pending_images))
        elif isinstance(ev, VaeLoadFailed):
            self.session.error.emit(f"{ev.source}: {ev.reason}")
        elif isinstance(ev, Row):
            self.rows.setdefault(ev.vae, []).append(ev)
            if time.monotonic() - self._last_draw > 0.3:
                self._draw_histogram()
        elif isinstance(ev, Progress):
            self.progress.setRange(0, max(1, ev.total))
            self.progress.setValue(ev.done)
            eta = "" if ev.eta_s is None else f", about {math.ceil(ev.eta_s)} s left"
            self.status.setText(f"{ev.done} of {ev.total} images, {ev.images_per_s:.1f} images/s{eta}")
        elif isinstance(ev, VaeSummary):
            self._add_summary(ev)
        elif isinstance(ev, Finished):
            self._finished(ev)

    def _draw_histogram(self) -> None:
        self._last_draw = time.monotonic()
        values = {n: [r.psnr for r in rows if r.psnr is not None and math.isfinite(r.psnr)]
                  for n, rows in self.rows.items()}
        allv = [v for vs in values.values() for v in vs]
        if not allv:
            return
        edges = np.linspace(min(allv) - 0.5, max(allv) + 0.5, 31)
        for i, (name, vs) in enumerate(values.items()):
            counts, _ = np.histogram(vs, bins=edges)
            if name not in self.curves:
                c = colour(i)
                self.curves[name] = self.hist.plot(stepMode="center", fillLevel=0, pen=pg.mkPen(c, width=2),
                                                   brush=(*c, 60), name=name)
            self.curves[name].setData(edges, counts)

    def _add_summary(self, s) -> None:
        d = s.to_dict()
        r = self.summary.rowCount()
        self.summary.insertRow(r)
        for c, (_label, key) in enumerate(SUMMARY_COLUMNS):
            v = d.get(key)
            if key == "rfid" and v is None:
                text = "-"
                tip = d.get("rfid_status", "")
            else:
                text = v if isinstance(v, str) else "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
                tip = ""
            item = QTableWidgetItem(text)
            if tip:
                item.setToolTip(tip)
            self.summary.setItem(r, c, item)
        self.summary.resizeColumnsToContents()
        for image, value, metric in s.worst:  # over all rows of the run, those of earlier sessions too
            shown = f"{value:.2f} dB" if metric == "psnr" else f"{metric.upper()} {value:.4g}"
            item = QListWidgetItem(f"{s.vae}: {Path(image).name}  {shown}")
            item.setData(Qt.ItemDataRole.UserRole, (image, s.source))
            item.setToolTip(image)
            self.worst.addItem(item)

    def _finished(self, ev) -> None:
        self._draw_histogram()
        folder = ev.outputs["summary"].parent if "summary" in ev.outputs else Path(self.out.text())
        if self.out_proposed:  # the next Start gets a folder of its own
            self._propose_out()
        self._set_running(False)
        self.outputs = dict(ev.outputs)
        self.report_btn.setEnabled("report" in self.outputs)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        skipped = f"; {len(ev.unreadable)} unreadable images skipped" if ev.unreadable else ""
        self.status.setText(f"Done: {sum(len(v) for v in self.rows.values())} rows this run{skipped}. "
                            f"Results in {folder}")
        self.session.message.emit(self.status.text())

    def _failed(self, msg: str) -> None:
        self._set_running(False)
        self.progress.setRange(0, 1)
        self.status.setText(f"Stopped: {msg}")
        self.session.error.emit(msg)

    def _cancelled(self) -> None:
        self._set_running(False)
        self.progress.setRange(0, 1)
        self.status.setText("Cancelled: what was done is kept; Resume continues the run")

    def open_report(self) -> None:
        report = self.outputs.get("report")
        if report:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(report)))

    def _inspect(self, item) -> None:
        image, source = item.data(Qt.ItemDataRole.UserRole)
        self.open_in_inspector.emit(image, source)

