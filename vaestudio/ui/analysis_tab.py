"""The Analysis tab: round-trip drift, tile seams, spectrum, noise robustness, scaling factor.

A view of the window's ``Session``: the session's current image is analysed by one or more VAEs (its
A and B, recent VAEs or files). Everything about an analysis comes from its description
(``vaestudio.core.analyses.describe``): the option page, the table, the summary lines, the plots
(the description's ``Figure``, drawn here with pyqtgraph, as ``plotting.draw_figure`` draws it for
the CLI's PNG) and the pictures. Each analysis is a core generator run in one worker job that streams
its steps and each VAE's result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
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

from vaestudio.core.analyses import ANALYSES
from vaestudio.ui.analysis_figure import draw_figure
from vaestudio.ui.session import Session, wire
from vaestudio.ui.vae_checklist import VaeChecklist


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
    from vaestudio.core.analyses.common import Step
    from vaestudio.core.errors import Cancelled, VaeStudioError, one_line
    from vaestudio.core.sources import load_vae

    run = ANALYSES[name].function()
    for i, (label, vae) in enumerate(vaes):
        owned = isinstance(vae, str)  # loaded here, so closed here; the session's VAEs are only lent
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
            yield AnalysisFailed(label, one_line(exc, with_type=not isinstance(exc, (VaeStudioError, ValueError))))
        finally:
            if owned and loaded is not None:
                loaded.close()


class OptionPage(QWidget):
    """The option page of one analysis, made from its description's options."""

    def __init__(self, kind) -> None:
        super().__init__()
        self.kind = kind
        self.fields: dict[str, QWidget] = {}
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        for o in kind.options:
            w = self._widget(o)
            w.setToolTip(o.help)
            self.fields[o.name] = w
            form.addRow(f"{o.label} ({o.unit})" if o.unit else o.label, w)
        if not kind.options:
            form.addRow(QLabel("no options"))

    @staticmethod
    def _widget(o) -> QWidget:
        if o.kind == "choice":
            w = QComboBox()
            w.addItems(list(o.choices))
            w.setCurrentText(o.default)
        elif o.kind == "sizes":
            w = QLineEdit(", ".join(str(v) for v in o.default))
        else:
            w = QSpinBox() if o.kind == "int" else QDoubleSpinBox()
            low = o.minimum if o.minimum is not None else (0.01 if o.positive else -(2**31))
            if o.auto:  # the lowest entry stands for "chosen from the image"
                low -= 1
                w.setSpecialValueText(o.auto)
            w.setRange(low, o.maximum if o.maximum is not None else 2**31 - 1)
            w.setValue(o.default if o.default is not None else low)
        return w

    def values(self) -> dict:
        """The options as typed, checked as the CLI checks them; ValueError names the field."""
        out = {}
        for o in self.kind.options:
            w = self.fields[o.name]
            if isinstance(w, QComboBox):
                out[o.name] = w.currentText()
            elif isinstance(w, QLineEdit):
                try:
                    out[o.name] = o.parse(w.text())
                except ValueError as exc:
                    raise ValueError(f"{o.label}: {exc}") from None
            else:
                special = o.auto and w.value() == w.minimum()
                out[o.name] = None if special else w.value()
        return self.kind.validate(out, lambda o: o.label)


class AnalysisTab(QWidget):
    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
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
        self.vae_list = VaeChecklist(session, "Tick the VAEs to analyse; each gets its own curve")
        self.add_btn = QPushButton("Add VAE file...")
        self.pages = {key: OptionPage(kind) for key, kind in ANALYSES.items()}
        self.options = QStackedWidget()
        for page in self.pages.values():
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
        self.verdict = QLabel("")  # each VAE's summary line (the CLI's), notes and warnings
        self.verdict.setWordWrap(True)
        self.verdict.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
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
        self.failures: list[str] = []
        self.image_name = ""  # the image the results are of
        self._key = self.kind.currentData()  # the analysis whose results are shown
        self.legend: pg.LegendItem | None = None
        self._connected = False
        self.kind.currentIndexChanged.connect(self._kind_changed)
        self.run_btn.clicked.connect(self.run)
        self.cancel_btn.clicked.connect(lambda: self.session.runner.cancel("analysis"))
        self.add_btn.clicked.connect(lambda: self.vae_list.pick_file("Add a VAE to the analysis"))
        self._kind_changed()
        self._connect_session(True)
        self._image_changed()

    # -- the session ------------------------------------------------------------------------------
    def _connect_session(self, connect: bool) -> None:
        if connect == self._connected:
            return
        self._connected = connect
        wire([(self.session.image_changed, self._image_changed)], connect)
        if not connect:
            self.vae_list.connect_session(False)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self._connect_session(False)
        super().closeEvent(event)

    def _image_changed(self) -> None:
        image = self.session.image
        self.image_label.setText(image.name if image is not None else "none: open an image in the Inspector first")

    # -- choices ----------------------------------------------------------------------------------
    def _kind_changed(self) -> None:
        key = self.kind.currentData()
        self.about.setText(ANALYSES[key].question)
        self.options.setCurrentWidget(self.pages[key])

    def add_source(self, path: str) -> None:
        self.vae_list.add_file(path)

    def chosen_vaes(self) -> list[tuple[str, object]]:
        """(label, VAE) to analyse: the session's loaded VAEs as they are, others as sources to load."""
        loaded = self.vae_list.loaded()
        return [(label, loaded.get(source, source)) for label, source in self.vae_list.chosen()]

    # -- running ------------------------------------------------------------------------------------
    def run(self) -> None:
        from vaestudio.core.images import resize_longer_side

        s = self.session
        if s.image is None:
            s.error.emit("open an image in the Inspector first; the analysis uses it")
            return
        vaes = self.chosen_vaes()
        if not vaes:
            s.error.emit("tick at least one VAE (load one in the Inspector, or Add VAE file...)")
            return
        key = self.kind.currentData()
        try:
            options = self.pages[key].values()
        except ValueError as exc:
            s.error.emit(str(exc))
            return
        pixels = resize_longer_side(s.image.pixels, self.size.value())
        self.results, self.failures, self._key, self.image_name = [], [], key, s.image.name
        self.plots.clear()
        self.table.setRowCount(0)
        self.verdict.setText("")
        self.picture_item.clear()
        self.picture_label.setText("")
        self.progress.setRange(0, 0)
        self.status.setText(f"{ANALYSES[key].title} of {s.image.name} ({pixels.shape[1]}x{pixels.shape[0]}) ...")
        self.run_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        s.runner.start("analysis", analysis_job, key, vaes, pixels, options, s.prefs,
                       on_yield=self._on_item, on_result=self._finished, on_error=self._failed,
                       on_cancel=lambda: self._finished(None, "Cancelled"))

    def _on_item(self, item) -> None:
        if isinstance(item, AnalysisStep):
            st = item.step
            self.progress.setRange(0, item.vaes * max(1, st.total))
            self.progress.setValue(item.vae * st.total + st.done)
            self.status.setText(f"{item.label}: {st.what} ({st.done + 1} of {st.total})")
        elif isinstance(item, AnalysisResult):
            self.results.append((item.label, item.result))
            self.show_results()
        elif isinstance(item, AnalysisFailed):
            self.failures.append(f"{item.label}: {item.reason}")
            self.session.error.emit(f"{item.label}: {item.reason}")

    def _finished(self, _result=None, text: str = "Done") -> None:
        self.run_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if text == "Done" else 0)
        failed = f", {len(self.failures)} failed" if self.failures else ""
        self.status.setText(f"{text}: {len(self.results)} VAE{'s' if len(self.results) != 1 else ''} analysed{failed}")
        self.session.message.emit(self.status.text())
        kind = ANALYSES[self._key]
        warnings = [f"{label}: {w}" for label, r in self.results if (w := kind.warning(r.to_dict()))]
        if warnings:
            self.session.error.emit(warnings[0])

    def _failed(self, msg: str) -> None:
        self.session.error.emit(msg)
        self._finished(None, "Stopped by an error")

    # -- showing: everything from the description -----------------------------------------------------
    def show_results(self) -> None:
        kind = ANALYSES[self._key]
        numbers = [(label, r.to_dict()) for label, r in self.results]
        self.legend = draw_figure(self.plots, kind.figure(numbers), [label for label, _ in numbers])
        self._fill_table(kind, numbers)
        lines = []
        for (label, r), (_, d) in zip(self.results, numbers, strict=True):
            warning = kind.warning(d)
            lines.append(f"<b>{label}</b>: {kind.summary(d)}")
            lines += [f"<span style='color:#be1e1e'>warning: {warning}</span>"] if warning else []
            lines += [f"<span style='color:gray'>note: {n}</span>" for n in r.notes]
        self.verdict.setText("<br>".join(lines))
        self._show_pictures(kind.pictures(self.results, self.image_name))

    def _fill_table(self, kind, numbers) -> None:
        rows = kind.table(numbers)
        columns = kind.columns
        self.table.setColumnCount(1 + len(columns))
        self.table.setHorizontalHeaderLabels(["VAE", *(c.header for c in columns)])
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            self.table.setItem(r, 0, QTableWidgetItem(row["vae"]))
            for c, column in enumerate(columns, start=1):
                self.table.setItem(r, c, QTableWidgetItem(column.text(row.get(column.key))))
        self.table.resizeColumnsToContents()

    def _show_pictures(self, pictures) -> None:
        self.picture.setVisible(bool(pictures))
        if not pictures:
            self.picture_item.clear()
            self.picture_label.setText("")
            return
        from vaestudio.core.pictures import comparison_strip

        def as_float(rgb: np.ndarray) -> np.ndarray:
            return rgb.astype(np.float32) / 255 if rgb.dtype == np.uint8 else rgb

        strip = comparison_strip(*(as_float(p.rgb) for p in pictures), gap=4)
        self.picture_item.setImage(np.clip(strip, 0, 1), levels=(0, 1), autoLevels=False)
        self.picture_vb.autoRange(padding=0)
        self.picture_label.setText(" | ".join(p.caption for p in pictures))
