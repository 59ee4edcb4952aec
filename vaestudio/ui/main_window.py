"""The main window: it only assembles the inspector and the MNIST studio, menus and the status bar."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PySide6.QtCore import QBuffer, QIODevice, Qt
from PySide6.QtGui import QAction, QGuiApplication, QIcon, QImage, QKeySequence
from PySide6.QtWidgets import QFileDialog, QLabel, QMainWindow, QMessageBox, QTabWidget

from vaestudio import __version__
from vaestudio.core.filetypes import WEIGHT_SUFFIXES
from vaestudio.ui.inspector import InspectorTab
from vaestudio.ui.jobs import save_latents_job
from vaestudio.ui.settings import PreferencesDialog, Store
from vaestudio.ui.training import TrainingTab
from vaestudio.ui.workers import JobRunner

log = logging.getLogger("vaestudio")
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff *.gif);;All files (*)"
WEIGHT_FILTER = "VAE weights (*.safetensors *.ckpt *.pt *.pth *.bin);;All files (*)"


def icon_path() -> Path:
    return Path(__file__).resolve().parents[1] / "resources" / "icons" / "vaestudio.png"


def to_qimage(rgb: np.ndarray) -> QImage:
    data = np.ascontiguousarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8))
    h, w = data.shape[:2]
    return QImage(data.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


class MainWindow(QMainWindow):
    def __init__(self, store: Store | None = None) -> None:
        super().__init__()
        self.setWindowTitle(f"vaestudio {__version__}")
        if icon_path().is_file():
            self.setWindowIcon(QIcon(str(icon_path())))
        self.setAcceptDrops(True)
        self.store = store or Store()
        self.prefs = self.store.prefs()
        self.runner = JobRunner(self)
        self.inspector = InspectorTab(self.runner, self.prefs)
        self.training = TrainingTab(self.runner)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.inspector, "Inspector")
        self.tabs.addTab(self.training, "MNIST studio")
        self.setCentralWidget(self.tabs)
        self.busy_label = QLabel("")
        self.statusBar().addPermanentWidget(self.busy_label)
        self.runner.busy_changed.connect(lambda b: self.busy_label.setText("working ..." if b else ""))
        self.inspector.message.connect(lambda m: self.statusBar().showMessage(m, 8000))
        self.inspector.error.connect(self.show_error)
        self.training.message.connect(lambda m: self.statusBar().showMessage(m, 8000))
        self.training.error.connect(self.show_error)
        self.training.open_in_inspector.connect(self.use_trained_vae)
        self.inspector.vae_loaded.connect(self._remember_vae)
        self.inspector.vae_panel.load_file.connect(self.pick_vae_file)
        self.inspector.vae_panel.load_folder.connect(self.pick_vae_folder)
        self.inspector.vae_panel.load_hub.connect(lambda s: self.inspector.load_vae(s))
        self.inspector.vae_panel.load_recent.connect(lambda s: self.inspector.load_vae(s))
        self.inspector.vae_panel.use_mnist.connect(self.use_mnist_vae)
        self.inspector.vae_panel.compare_b.connect(self.pick_vae_b)
        self.inspector.vae_panel.set_recent(self.store.recent("vaes"))
        self.last_error = ""
        self._build_menus()
        geo = self.store.get("window/geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        else:
            self.resize(1400, 900)

    # -- menus --------------------------------------------------------------------------------
    def _action(self, menu, text: str, slot, shortcut=None, tip: str = "") -> QAction:
        act = QAction(text, self)
        if shortcut is not None:
            act.setShortcut(QKeySequence(shortcut))
        act.setToolTip(tip or text)
        act.setStatusTip(tip or text)
        act.triggered.connect(slot)
        menu.addAction(act)
        self.addAction(act)
        return act

    def _build_menus(self) -> None:
        bar = self.menuBar()
        f = bar.addMenu("&File")
        self._action(f, "&Open images...", self.pick_images, QKeySequence.StandardKey.Open)
        self.recent_menu = f.addMenu("Open &recent")
        self._fill_recent_images()
        self._action(f, "&Paste image", self.paste_image, QKeySequence.StandardKey.Paste)
        self._action(f, "&Load VAE file...", self.pick_vae_file, "Ctrl+L")
        f.addSeparator()
        self._action(f, "&Save reconstruction...", lambda: self.export("recon"), QKeySequence.StandardKey.Save)
        self._action(f, "Save &difference map...", lambda: self.export("diff"))
        self._action(f, "Save comparison s&trip...", lambda: self.export("strip"), "Ctrl+Shift+S")
        self._action(f, "Save latent &heatmaps...", lambda: self.export("heatmaps"))
        self._action(f, "Save latents (.safe&tensors)...", lambda: self.export("latents"))
        self._action(f, "&Copy reconstruction", self.copy_image, QKeySequence.StandardKey.Copy)
        f.addSeparator()
        self._action(f, "P&references...", self.edit_prefs, QKeySequence.StandardKey.Preferences)
        self._action(f, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        v = bar.addMenu("&View")
        self._action(v, "&Fit", self.inspector.compare.fit, "Ctrl+0")
        self._action(v, "&1:1", self.inspector.compare.one_to_one, "Ctrl+1")
        self._action(v, "&Next image", lambda: self.inspector.step(1), "Right")
        self._action(v, "&Previous image", lambda: self.inspector.step(-1), "Left")
        self._action(v, "&Cancel job", self.inspector.cancel, "Esc")
        h = bar.addMenu("&Help")
        self._action(h, "&About vaestudio", self.about)

    def _fill_recent_images(self) -> None:
        self.recent_menu.clear()
        for p in self.store.recent("images"):
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda _=False, p=p: self.open_images([p]))

    # -- opening things -----------------------------------------------------------------------
    def pick_images(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Open images", self.store.get("dirs/images", ""), IMAGE_FILTER)
        if paths:
            self.open_images(paths)

    def open_images(self, paths: list[str]) -> None:
        if not paths:
            return
        self.store.set("dirs/images", str(Path(paths[0]).parent))
        for p in reversed(paths[:10]):
            self.store.push_recent("images", p)
        self._fill_recent_images()
        self.tabs.setCurrentWidget(self.inspector)
        self.inspector.open_sources(paths)

    def paste_image(self) -> None:
        img = QGuiApplication.clipboard().image()
        if img.isNull():
            urls = QGuiApplication.clipboard().mimeData().urls()
            paths = [u.toLocalFile() for u in urls if u.isLocalFile()]
            if paths:
                self.open_images(paths)
            else:
                self.show_error("the clipboard holds no image")
            return
        buf = QBuffer()
        buf.open(QIODevice.OpenModeFlag.WriteOnly)
        img.save(buf, "PNG")
        self.inspector.open_sources([bytes(buf.data())])

    def pick_vae_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load VAE", self.store.get("dirs/vaes", ""), WEIGHT_FILTER)
        if path:
            self.store.set("dirs/vaes", str(Path(path).parent))
            self.inspector.load_vae(path)

    def pick_vae_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Load a diffusers VAE folder", self.store.get("dirs/vaes", ""))
        if path:
            self.inspector.load_vae(path)

    def pick_vae_b(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "VAE B for A/B comparison", self.store.get("dirs/vaes", ""),
                                              WEIGHT_FILTER)
        if path:
            self.inspector.load_vae(path, slot="b")

    def use_mnist_vae(self) -> None:
        if self.training.has_model():
            self.use_trained_vae()
            return
        path, _ = QFileDialog.getOpenFileName(self, "MNIST VAE checkpoint", "", "MNIST checkpoints (*.safetensors)")
        if path:
            self.inspector.load_vae(path)

    def use_trained_vae(self) -> None:
        vae = self.training.inspector_vae()
        if vae is None:
            self.show_error("train a model first (or load a checkpoint in the MNIST studio)")
            return
        self.tabs.setCurrentWidget(self.inspector)
        self.inspector.set_vae(vae)

    def _remember_vae(self, source: str) -> None:
        self.inspector.vae_panel.set_recent(self.store.push_recent("vaes", source))

    # -- drag and drop ------------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt API
        if event.mimeData().hasUrls() or event.mimeData().hasImage():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt API
        md = event.mimeData()
        paths = [u.toLocalFile() for u in md.urls() if u.isLocalFile()]
        weights = [p for p in paths if Path(p).suffix.lower() in WEIGHT_SUFFIXES]
        images = [p for p in paths if p not in weights and not Path(p).is_dir()]
        folders = [p for p in paths if Path(p).is_dir()]
        if weights or folders:  # a dropped weight file or model folder becomes the VAE
            self.inspector.load_vae((weights or folders)[0])
        if images:
            self.open_images(images)
        elif md.hasImage() and not paths:
            buf = QBuffer()
            buf.open(QIODevice.OpenModeFlag.WriteOnly)
            QImage(md.imageData()).save(buf, "PNG")
            self.inspector.open_sources([bytes(buf.data())])
        event.acceptProposedAction()

    # -- export -------------------------------------------------------------------------------
    def export(self, what: str) -> None:
        ins = self.inspector
        if ins.result is None or ins.image is None:
            self.show_error("nothing to save yet: open an image and load a VAE")
            return
        base = ins.image.name
        names = {"recon": f"{base}_recon.png", "diff": f"{base}_diff.png", "strip": f"{base}_strip.png",
                 "heatmaps": f"{base}_latents.png", "latents": f"{base}_latents.safetensors"}
        start = str(Path(self.store.get("dirs/export", "") or ".") / names[what])
        flt = "safetensors (*.safetensors)" if what == "latents" else "PNG (*.png)"
        path, _ = QFileDialog.getSaveFileName(self, "Save", start, flt)
        if path:
            self.save_export(what, path)

    def save_export(self, what: str, path: str) -> None:
        """Write one export; failures (disk full, read-only folder) are reported, nothing half-written."""
        from vaestudio.core.images import save_png

        ins = self.inspector
        self.store.set("dirs/export", str(Path(path).parent))
        try:
            if what == "latents":
                meta = {"source_image": ins.image.name, "vae": ins.vae.info.source, "family": ins.vae.family.name,
                        "scaled": "true"}
                self.runner.start("export", save_latents_job, ins.enc.latent, path, meta, on_result=lambda p: self.statusBar().showMessage(f"Saved {p}", 8000),
                                  on_error=self.show_error)
                return
            if what == "recon":
                img = ins.result.decoded
            elif what == "diff":
                img = ins.result.diff_rgb
            elif what == "strip":
                img = np.concatenate([ins.original, ins.result.decoded, ins.result.diff_rgb], axis=1)
            else:
                img = self._heatmap_sheet()
            save_png(img, path)
            self.statusBar().showMessage(f"Saved {path}", 8000)
        except OSError as exc:
            self.show_error(f"{path}: could not save ({exc.strerror or exc})")

    def _heatmap_sheet(self) -> np.ndarray:
        from vaestudio.core.analysis import heatmaps
        from vaestudio.core.metrics import colorize

        maps, _ = heatmaps(self.inspector.enc.latent, shared=self.inspector.latents.shared.isChecked())
        tiles = [np.pad(colorize(m, 1.0), ((2, 2), (2, 2), (0, 0)), constant_values=1.0) for m in maps]
        cols = int(np.ceil(np.sqrt(len(tiles))))
        rows = []
        for r in range(0, len(tiles), cols):
            row = tiles[r : r + cols]
            row += [np.ones_like(tiles[0])] * (cols - len(row))
            rows.append(np.concatenate(row, axis=1))
        sheet = np.concatenate(rows, axis=0)
        scale = max(1, 256 // max(sheet.shape[:2]))
        return np.kron(sheet, np.ones((scale, scale, 1), np.float32))

    def copy_image(self) -> None:
        if self.inspector.result is not None:
            QGuiApplication.clipboard().setImage(to_qimage(self.inspector.result.decoded))
            self.statusBar().showMessage("Reconstruction copied to the clipboard", 5000)

    # -- misc ---------------------------------------------------------------------------------
    def edit_prefs(self) -> None:
        dlg = PreferencesDialog(self.prefs, self)
        if dlg.exec():
            new = dlg.value()
            for k in ("device", "dtype", "tile"):
                setattr(self.prefs, k, getattr(new, k))
            self.store.set_prefs(self.prefs)
            self.statusBar().showMessage("Preferences saved; they apply to the next VAE you load", 8000)

    def show_error(self, message: str) -> None:
        """Status bar plus a non-blocking message box; the window stays usable."""
        self.last_error = message
        log.warning("%s", message)
        self.statusBar().showMessage(f"Error: {message}", 15000)
        box = QMessageBox(QMessageBox.Icon.Warning, "vaestudio", message, QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.setModal(False)
        box.show()
        self._error_box = box

    def about(self) -> None:
        from vaestudio.ui.crash import log_path

        QMessageBox.about(self, "About vaestudio",
                          f"vaestudio {__version__}\nSee what a VAE does to your images.\n\nLog file: {log_path()}")

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.store.set("window/geometry", self.saveGeometry())
        self.store.s.sync()
        self.training.stop()
        self.runner.wait_all(3000)
        super().closeEvent(event)
