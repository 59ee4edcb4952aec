"""The Analysis tab: round-trip drift, tile seams, spectrum, noise robustness, scaling factor.

The inspector's current image is analysed by one or more VAEs (the loaded A and B, recent VAEs or
files). Each analysis is a core generator (``vaestudio.core.analyses``) run in one worker job that
streams its steps and each VAE's result; the plots are drawn here with pyqtgraph from the result's
numbers, one colour per VAE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from vaestudio.core.analyses.plotting import colour as palette_colour
from vaestudio.ui.plotting import IntegerAxis
from vaestudio.ui.vae_checklist import VaeChecklist
from vaestudio.ui.workers import JobRunner


@dataclass
class AnalysisStep:
    vae: int  # index of the VAE being analysed
    vaes: int
    label: str
    step: object  # core.analyses.common.Step


@dataclass
class AnalysisResult:
    label: str
    result: object


@dataclass
class AnalysisFailed:
    label: str
    reason: str


def analysis_job(name: str, vaes: list, pixels: np.ndarray, options: dict, prefs, *, progress, should_stop):
    """Run one analysis for each VAE (a loaded VAE or a source to load); stream steps and results.
    A VAE that fails (cannot load, cannot do this analysis) is reported and the others go on."""
    from vaestudio.core.analyses import ANALYSES
    from vaestudio.core.analyses.common import Step
    from vaestudio.core.errors import Cancelled, VaeStudioError
    from vaestudio.core.sources import load_vae

    run, _plot = ANALYSES[name].functions()
    for i, (label, vae) in enumerate(vaes):
        owned = isinstance(vae, str)  # loaded here, so closed here; the inspector's VAEs are only lent
        loaded = None
        try:
            loaded = load_vae(vae, device=prefs.device, dtype=prefs.dtype, should_stop=should_stop) if owned else vae
            for item in run(loaded, pixels, tile=prefs.tile, should_stop=should_stop, **options):
                if isinstance(item, Step):
                    yield AnalysisStep(i, len(vaes), label, item)
                else:
                    yield AnalysisResult(label, item)
                    break
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - one VAE failing (even out of memory) never stops the others
            yield AnalysisFailed(label, str(exc) if isinstance(exc, (VaeStudioError, ValueError))
                                 else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        finally:
            if owned and loaded is not None:
                loaded.close()


class AnalysisTab(QWidget):
    message = Signal(str)
    error = Signal(str)

    def __init__(self, runner: JobRunner, prefs, inspector) -> None:
        super().__init__()
        self.runner, self.prefs, self.inspector = runner, prefs, inspector
        from vaestudio.core.analyses import ANALYSES

        self.analyses = ANALYSES
        self.kind = QComboBox()
        for key, kind in ANALYSES.items():
            self.kind.addItem(kind.title, key)
        self.about = QLabel("")
        self.about.setWordWrap(True)
        self.image_label = QLabel("")
        self.image_label.setWordWrap(True)
        self.size = QSpinBox()
        self.size.setRange(32, 2048)
        self.size.setSingleStep(32)
        self.size.setValue(256)
        self.size.setSuffix(" px")
        self.size.setToolTip("The image is resized so its longer side has this many pixels (analyses decode many "
                             "times: small keeps them quick)")
        self.vae_list = VaeChecklist(inspector, "Tick the VAEs to analyse; each gets its own curve")
        self.add_btn = QPushButton("Add VAE file...")
        self.rounds = QSpinBox()
        self.rounds.setRange(1, 100)
        self.rounds.setValue(10)
        self.tiles = QLineEdit("64, 128")
        self.overlaps = QLineEdit("0, 16, 32")
        self.steps = QSpinBox()
        self.steps.setRange(2, 50)
        self.steps.setValue(10)
        self.noise_mode = QComboBox()
        self.noise_mode.addItems(["timestep", "strength"])
        self.options = QStackedWidget()
        for rows in ((("Rounds", self.rounds),), (("Tile sizes (px)", self.tiles), ("Overlaps (px)", self.overlaps)),
                     (), (("Points", self.steps), ("Noise as", self.noise_mode)), ()):
            page = QWidget()
            form = QFormLayout(page)
            form.setContentsMargins(0, 0, 0, 0)
            for label, w in rows:
                form.addRow(label, w)
            if not rows:
                form.addRow(QLabel("no options"))
            self.options.addWidget(page)
        self.run_btn = QPushButton("Run")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        box = QGroupBox("Analysis")
        form = QFormLayout(box)
        form.addRow(self.kind)
        form.addRow(self.about)
        form.addRow("Image", self.image_label)
        form.addRow("Size", self.size)
        form.addRow(QLabel("VAEs"))
        form.addRow(self.vae_list)
        form.addRow(self.add_btn)
        form.addRow(self.options)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_btn)
        buttons.addWidget(self.cancel_btn)
        form.addRow(buttons)
        form.addRow(self.progress)
        form.addRow(self.status)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(box)
        ll.addStretch(1)
        left.setFixedWidth(380)
        self.plots = pg.GraphicsLayoutWidget()
        self.picture = pg.GraphicsLayoutWidget()
        self.picture_label = self.picture.addLabel("", row=0, col=0)
        self.picture_vb = self.picture.addViewBox(row=1, col=0, lockAspect=True, invertY=True, enableMenu=False)
        self.picture_item = pg.ImageItem(axisOrder="row-major")
        self.picture_vb.addItem(self.picture_item)
        self.table = QTableWidget(0, 0)
        self.table.verticalHeader().hide()
        self.verdict = QLabel("")
        self.verdict.setWordWrap(True)
        self.verdict.hide()
        table_box = QWidget()
        tl = QVBoxLayout(table_box)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(self.verdict)
        tl.addWidget(self.table, 1)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.plots)
        lower = QSplitter(Qt.Orientation.Horizontal)
        lower.addWidget(self.picture)
        lower.addWidget(table_box)
        lower.setStretchFactor(0, 1)
        lower.setStretchFactor(1, 1)
        right.addWidget(lower)
        right.setStretchFactor(0, 3)
        right.setStretchFactor(1, 2)
        lay = QHBoxLayout(self)
        lay.addWidget(left)
        lay.addWidget(right, 1)
        self.results: list[tuple[str, object]] = []
        self._key = "drift"  # the analysis whose results are shown
        self.legend: pg.LegendItem | None = None
        self._named: set[str] = set()
        self.kind.currentIndexChanged.connect(self._kind_changed)
        self.run_btn.clicked.connect(self.run)
        self.cancel_btn.clicked.connect(lambda: self.runner.cancel("analysis"))
        self.add_btn.clicked.connect(lambda: self.vae_list.pick_file("Add a VAE to the analysis"))
        self._kind_changed()

    # -- choices ----------------------------------------------------------------------------------
    def _kind_changed(self) -> None:
        key = self.kind.currentData()
        self.about.setText(self.analyses[key].question)
        self.options.setCurrentIndex(list(self.analyses).index(key))

    def refresh(self, recent: list[str] | None = None) -> None:
        """The image and the VAEs on offer follow the inspector (called when the tab is shown)."""
        ins = self.inspector
        self.image_label.setText(ins.image.name if ins.image is not None else
                                 "none: open an image in the Inspector first")
        self.vae_list.refresh(recent)

    def add_source(self, path: str) -> None:
        self.vae_list.add_file(path)

    def chosen_vaes(self) -> list[tuple[str, object]]:
        """(label, VAE) to analyse: the inspector's loaded VAEs as they are, others as sources to load."""
        loaded = self.vae_list.loaded()
        return [(label, loaded.get(source, source)) for label, source in self.vae_list.chosen()]


    def options_for(self, key: str) -> dict:
        if key == "drift":
            return {"rounds": self.rounds.value()}
        if key == "seams":
            from vaestudio.core.analyses import check_seam_settings, parse_sizes

            try:
                tiles = parse_sizes(self.tiles.text())
            except ValueError as exc:
                raise ValueError(f"Tile sizes: {exc}") from None
            try:
                overlaps = parse_sizes(self.overlaps.text())
            except ValueError as exc:
                raise ValueError(f"Overlaps: {exc}") from None
            check_seam_settings(tiles, overlaps)
            return {"tiles": tiles, "overlaps": overlaps}
        if key == "noise":
            return {"steps": self.steps.value(), "mode": self.noise_mode.currentText()}
        return {}

    # -- running ------------------------------------------------------------------------------------
    def run(self) -> None:
        from vaestudio.core.images import resize_longer_side

        ins = self.inspector
        if ins.image is None:
            self.error.emit("open an image in the Inspector first; the analysis uses it")
            return
        vaes = self.chosen_vaes()
        if not vaes:
            self.error.emit("tick at least one VAE (load one in the Inspector, or Add VAE file...)")
            return
        key = self.kind.currentData()
        try:
            options = self.options_for(key)
        except ValueError as exc:
            self.error.emit(str(exc))
            return
        pixels = resize_longer_side(ins.image.pixels, self.size.value())
        self.results = []
        self.failures: list[str] = []
        self._key = key
        self.plots.clear()
        self.table.setRowCount(0)
        self.verdict.hide()
        self.picture_item.clear()
        self.picture_label.setText("")
        self.progress.setRange(0, 0)
        self.status.setText(f"{self.analyses[key].title} of {ins.image.name} ({pixels.shape[1]}x{pixels.shape[0]}) ...")
        self.run_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.runner.start("analysis", analysis_job, key, vaes, pixels, options, self.prefs,
                          on_yield=self._on_item, on_result=self._finished, on_error=self._failed,
                          on_cancel=lambda: self._finished(None, "Cancelled"))

    def _on_item(self, item) -> None:
        if isinstance(item, AnalysisStep):
            s = item.step
            total = item.vaes * max(1, s.total)
            self.progress.setRange(0, total)
            self.progress.setValue(item.vae * s.total + s.done)
            self.status.setText(f"{item.label}: {s.what} ({s.done + 1} of {s.total})")
        elif isinstance(item, AnalysisResult):
            self.results.append((item.label, item.result))
            self.show_results()
        elif isinstance(item, AnalysisFailed):
            self.failures.append(f"{item.label}: {item.reason}")
            self.error.emit(f"{item.label}: {item.reason}")

    def _finished(self, _result=None, text: str = "Done") -> None:
        self.run_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if text == "Done" else 0)
        failed = f", {len(self.failures)} failed" if self.failures else ""
        self.status.setText(f"{text}: {len(self.results)} VAE{'s' if len(self.results) != 1 else ''} analysed{failed}")
        self.message.emit(self.status.text())
        warnings = [f"{label}: {r.warning}" for label, r in self.results if getattr(r, "warning", None)]
        if warnings:
            self.message.emit(warnings[0])

    def _failed(self, msg: str) -> None:
        self.error.emit(msg)
        self._finished(None, "Stopped by an error")

    # -- showing ---------------------------------------------------------------------------------------
    def show_results(self) -> None:
        key = self._key
        self.plots.clear()
        # one legend above the plots, so it never covers a curve
        self.legend = pg.LegendItem(colCount=4)
        self.plots.addItem(self.legend, row=0, col=0)
        self._named: set[str] = set()
        getattr(self, f"_show_{key}")()

    def _plot(self, row: int, title: str, xlabel: str, ylabel: str, *, logy: bool = False, col: int = 0,
              integer_x: bool = False):
        axes = {"bottom": IntegerAxis("bottom")} if integer_x else None
        p = self.plots.addPlot(row=row + 1, col=col, title=title, axisItems=axes)
        p.setLabel("bottom", xlabel)
        p.setLabel("left", ylabel)
        for side in ("bottom", "left"):
            p.getAxis(side).enableAutoSIPrefix(False)
        p.showGrid(x=True, y=True, alpha=0.2)
        if logy:
            p.setLogMode(y=True)
        return p

    def _curve(self, plot, i: int, x, y, name: str, symbol: str | None = "o") -> None:
        colour = palette_colour(i)
        y = np.array([np.nan if (v is None or not math.isfinite(v)) else v for v in y], dtype=float)
        item = plot.plot(list(x), y, pen=pg.mkPen(colour, width=2), symbol=symbol, symbolSize=6, symbolBrush=colour,
                         symbolPen=None, connect="finite")
        if name not in self._named:
            self._named.add(name)
            self.legend.addItem(item, name)

    def _picture(self, rgb: np.ndarray, caption: str) -> None:
        self.picture_item.setImage(rgb, levels=(0, 1) if rgb.dtype != np.uint8 else (0, 255), autoLevels=False)
        self.picture_vb.autoRange(padding=0)
        self.picture_label.setText(caption)

    def _fill_table(self, headers: list[str], rows: list[list]) -> None:
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, v in enumerate(row):
                if isinstance(v, str):
                    text = v
                elif v is None or (isinstance(v, float) and math.isnan(v)):
                    text = "-"
                else:
                    text = f"{v:.4g}"  # inf shows as inf
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()

    def _show_drift(self) -> None:
        p1 = self._plot(0, "PSNR against the original after each round", "round", "PSNR (dB)", integer_x=True)
        p2 = self._plot(1, "colour shift after each round: size of the mean RGB change", "round",
                        "|shift| (0..1 scale)", integer_x=True)
        rows = []
        for i, (label, r) in enumerate(self.results):
            ks = [x.round for x in r.rounds]
            self._curve(p1, i, ks, [x.psnr for x in r.rounds], label)
            self._curve(p2, i, ks, [float(np.linalg.norm(x.color_shift)) for x in r.rounds], label)
            last = r.rounds[-1]
            rows.append([label, last.round, last.psnr, last.ssim, *last.color_shift])
        label, r = self.results[0]
        from vaestudio.core.pictures import comparison_strip

        self._picture(comparison_strip(r.original, r.last, gap=4),
                      f"{label}: original | after {len(r.rounds)} rounds")
        self._fill_table(["VAE", "rounds", "PSNR", "SSIM", "shift R", "shift G", "shift B"], rows)

    def _show_seams(self) -> None:
        p = self._plot(0, "seam score by tile size / overlap (1 = no seams)", "tile / overlap", "seam score")
        # the settings differ between VAEs (tiles are rounded to each VAE's factor): one axis for all
        settings = sorted({(s.tile, s.overlap) for _label, r in self.results for s in r.settings})
        where = {ts: i for i, ts in enumerate(settings)}
        p.getAxis("bottom").setTicks([[(i, f"{t}/{o}") for i, (t, o) in enumerate(settings)]])
        line = pg.InfiniteLine(pos=1.0, angle=0, pen=pg.mkPen((160, 160, 160), style=Qt.PenStyle.DashLine))
        p.addItem(line)
        rows = []
        for i, (label, r) in enumerate(self.results):
            self._curve(p, i, [where[(s.tile, s.overlap)] for s in r.settings], [s.seam_score for s in r.settings],
                        label)
            for s in r.settings:
                rows.append([label, s.tile, s.overlap, s.seam_score, s.untiled_score, s.max_difference])
        from vaestudio.core.analyses.seams import seam_maps

        label, r = self.results[0]
        self._picture(seam_maps(r, f"{label}: |tiled - untiled| with the tile boundaries"), "")
        self._fill_table(["VAE", "tile", "overlap", "seam score", "untiled (control)", "max difference"], rows)

    def _show_spectrum(self) -> None:
        p = self._plot(0, "reconstruction / original power per spatial frequency", "cycles per pixel",
                       "power ratio", logy=True)
        p.addItem(pg.InfiniteLine(pos=0.0, angle=0, pen=pg.mkPen((160, 160, 160), style=Qt.PenStyle.DashLine)))
        rows = []
        for i, (label, r) in enumerate(self.results):
            self._curve(p, i, r.frequencies, r.ratio, label, symbol=None)
            f = np.asarray(r.frequencies)
            ratio = np.asarray(r.ratio, dtype=float)
            high = ratio[f >= 0.25]
            rows.append([label, float(np.nanmean(ratio[f < 0.1])) if (f < 0.1).any() else None,
                         float(np.nanmean(high)) if high.size else None])
        label, r = self.results[0]
        if r.reconstruction is not None:
            self._picture(r.reconstruction, f"{label}: reconstruction")
        self._fill_table(["VAE", "mean ratio below 0.1 c/px", "mean ratio above 0.25 c/px"], rows)

    def _show_noise(self) -> None:
        mode = self.results[0][1].mode
        xl = "timestep" if mode == "timestep" else "noise strength"
        p1 = self._plot(0, "PSNR against the clean reconstruction", xl, "PSNR (dB)")
        p2 = self._plot(1, "SSIM against the clean reconstruction", xl, "SSIM")
        rows = []
        for i, (label, r) in enumerate(self.results):
            ts = [pt.t for pt in r.points]
            self._curve(p1, i, ts, [pt.psnr for pt in r.points], label)
            self._curve(p2, i, ts, [pt.ssim for pt in r.points], label)
            for pt in r.points:
                rows.append([label, pt.t, pt.psnr, pt.ssim, pt.snr_db])
        label, r = self.results[0]
        self._picture(r.clean, f"{label}: clean reconstruction")
        self._fill_table(["VAE", "t", "PSNR", "SSIM", "SNR (dB)"], rows)

    def _show_scale(self) -> None:
        p = self._plot(0, "standard deviation of each channel in model space (1 is the aim)", "channel", "std")
        p.addItem(pg.InfiniteLine(pos=1.0, angle=0, pen=pg.mkPen((160, 160, 160), style=Qt.PenStyle.DashLine)))
        rows = []
        warnings = []
        for i, (label, r) in enumerate(self.results):
            self._curve(p, i, range(len(r.model_channel_std)), r.model_channel_std, label)
            rows.append([label, r.std, r.mean, r.suggested_scaling_factor, r.suggested_shift,
                         r.configured_scaling_factor, r.configured_shift, r.model_std, "far off" if r.far else "ok"])
            if r.warning:
                warnings.append(f"{label}: {r.warning}")
        self.picture_item.clear()
        self.picture_label.setText("")
        self.verdict.setText("<br>".join(warnings) if warnings else "The configured scaling factors are near the "
                                                                    "measured ones.")
        self.verdict.show()
        self._fill_table(["VAE", "raw std", "raw mean", "suggested factor", "suggested shift", "configured factor",
                          "configured shift", "model-space std", "verdict"], rows)
        if warnings:
            self.error.emit(warnings[0])
