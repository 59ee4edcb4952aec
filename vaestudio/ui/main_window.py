"""The main window: it assembles the tabs, the menus, the status bar, drag and drop and dialogs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PySide6.QtCore import QBuffer, QIODevice, Qt
from PySide6.QtGui import QAction, QGuiApplication, QIcon, QImage, QKeySequence
from PySide6.QtWidgets import QFileDialog, QLabel, QMainWindow, QMessageBox, QTabWidget

from vaestudio import __version__
from vaestudio.core.filetypes import MEDIA_FILTER, WEIGHT_FILTER, WEIGHT_SUFFIXES
from vaestudio.ui import jobs
from vaestudio.ui.analysis_tab import AnalysisTab
from vaestudio.ui.evaluate_tab import EvaluateTab
from vaestudio.ui.inspector import InspectorTab
from vaestudio.ui.session import Session
from vaestudio.ui.settings import PreferencesDialog, Store
from vaestudio.ui.training import TrainingTab

log = logging.getLogger("vaestudio")
EXPORT_NAMES = {"recon": "{}_recon.png", "diff": "{}_diff.png", "strip": "{}_strip.png",
                "heatmaps": "{}_latents.png", "latents": "{}_latents.safetensors"}


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
        self.session = Session(prefs=self.store.prefs(), parent=self)  # what every tab shows
        self.session.set_recent_vaes(self.store.recent("vaes"))
        self.runner = self.session.runner
        self.inspector = InspectorTab(self.session)
        self.training = TrainingTab(self.session)
        self.training.last_dir = self.store.get("dirs/checkpoints", "") or ""
        self.analysis = AnalysisTab(self.session)
        self.evaluate = EvaluateTab(self.session)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.inspector, "Inspector")
        self.tabs.addTab(self.analysis, "Analysis")
        self.tabs.addTab(self.evaluate, "Evaluate")
        self.tabs.addTab(self.training, "Training")
        self.setCentralWidget(self.tabs)
        self.busy_label = QLabel("")
        self.statusBar().addPermanentWidget(self.busy_label)
        self.runner.busy_changed.connect(lambda b: self.busy_label.setText("working ..." if b else ""))
        self.session.message.connect(lambda m: self.statusBar().showMessage(m, 8000))  # every tab's
        self.session.error.connect(self.show_error)
        self.training.open_in_inspector.connect(lambda: self.tabs.setCurrentWidget(self.inspector))
        self.evaluate.open_in_inspector.connect(self.inspect_image_with)
        self.session.vae_loaded.connect(lambda s: self.session.set_recent_vaes(self.store.push_recent("vaes", s)))
        panel = self.inspector.vae_panel
        panel.load_file.connect(self.pick_vae_file)
        panel.load_folder.connect(self.pick_vae_folder)
        panel.load_hub.connect(lambda s: self.session.load_vae(s))
        panel.load_recent.connect(lambda s: self.session.load_vae(s))
        panel.use_mnist.connect(self.use_mnist_vae)
        panel.compare_b.connect(self.pick_vae_b)
        self.last_error = ""
        self._error_boxes: list[QMessageBox] = []
        self._close_approved = False
        self._build_menus()
        geo = self.store.get("window/geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        else:
            self.resize(1500, 940)

    def inspect_image_with(self, image: str, source: str) -> None:
        """From the evaluation's worst images: that image in the inspector, with that VAE."""
        self.tabs.setCurrentWidget(self.inspector)
        if self.session.vae is None or self.session.vae.info.source != source:
            self.session.load_vae(source)
        self.open_images([image])

    def warm_up(self) -> None:
        """Import torch and the loaders in a worker while the user looks at the window."""
        self.runner.start("warmup", jobs.warm_up, on_result=self.session.set_devices, on_error=lambda m: log.warning("warm-up: %s", m))

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
        self._action(v, "&Next image", lambda: self.session.step(1), "Right")
        self._action(v, "&Previous image", lambda: self.session.step(-1), "Left")
        self._action(v, "&Cancel job", self.inspector.cancel, "Esc")
        h = bar.addMenu("&Help")
        self._action(h, "&About vaestudio", self.about)

    def _fill_recent_images(self) -> None:
        self.recent_menu.clear()
        for p in self.store.recent("images"):
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda _=False, p=p: self.open_images([p]))
        self.recent_menu.setEnabled(not self.recent_menu.isEmpty())

    def _dir(self, key: str) -> str:
        return self.store.get(f"dirs/{key}", "") or str(Path.home())

    def _remember_dir(self, key: str, path: str) -> None:
        p = Path(path)
        self.store.set(f"dirs/{key}", str(p if p.is_dir() else p.parent))

    # -- opening things -----------------------------------------------------------------------
    def pick_images(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Open images or clips", self._dir("images"), MEDIA_FILTER)
        if paths:
            self.open_images(paths)

    def open_images(self, paths: list[str]) -> None:
        if not paths:
            return
        self._remember_dir("images", paths[0])
        for p in reversed(paths[:10]):
            self.store.push_recent("images", p)
        self._fill_recent_images()
        self.tabs.setCurrentWidget(self.inspector)
        self.session.open_images(paths)

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
        self.session.open_images([bytes(buf.data())])

    def pick_vae_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load VAE", self._dir("vaes"), WEIGHT_FILTER)
        if path:
            self._remember_dir("vaes", path)
            self.session.load_vae(path)

    def pick_vae_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Load a VAE folder (diffusers, or tiny autoencoder pairs)",
                                                self._dir("vaes"))
        if path:
            self.store.set("dirs/vaes", str(Path(path).parent))
            self.session.load_vae(path)

    def pick_vae_b(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "VAE B for A/B comparison", self._dir("vaes"), WEIGHT_FILTER)
        if path:
            self._remember_dir("vaes", path)
            self.session.load_vae(path, slot="b")

    def use_mnist_vae(self) -> None:
        if self.training.has_model():
            self.training.send_to_inspector()
            return
        path, _ = QFileDialog.getOpenFileName(self, "MNIST VAE checkpoint", self._dir("checkpoints"),
                                              "MNIST checkpoints (*.safetensors)")
        if path:
            self._remember_dir("checkpoints", path)
            self.session.load_vae(path)

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
            self.session.load_vae((weights or folders)[0])
        if images:
            self.open_images(images)
        elif md.hasImage() and not paths:
            buf = QBuffer()
            buf.open(QIODevice.OpenModeFlag.WriteOnly)
            QImage(md.imageData()).save(buf, "PNG")
            self.session.open_images([bytes(buf.data())])
        event.acceptProposedAction()

    # -- export -------------------------------------------------------------------------------
    def export(self, what: str) -> None:
        s = self.session
        if s.clip is not None:
            self.show_error("a clip is open: save its reconstruction and difference with Save videos... beside the "
                            "frame slider")
            return
        if s.result is None or s.image is None:
            self.show_error("nothing to save yet: open an image and load a VAE")
            return
        start = str(Path(self._dir("export")) / EXPORT_NAMES[what].format(s.image.name))
        flt = "safetensors (*.safetensors)" if what == "latents" else "PNG (*.png)"
        path, _ = QFileDialog.getSaveFileName(self, "Save", start, flt)
        if path:
            self.save_export(what, path)

    def save_export(self, what: str, path: str) -> None:
        """Compose and write one export in a worker; failures are reported, nothing half-written."""
        data = self.inspector.export_data(what)
        if data is None:
            self.show_error("nothing to save yet: open an image and load a VAE")
            return
        self._remember_dir("export", path)
        self.runner.start(f"export:{path}", jobs.export_job, what, data, path,
                          on_result=lambda p: self.statusBar().showMessage(f"Saved {p}", 8000),
                          on_error=self.show_error)

    def copy_image(self) -> None:
        if self.session.result is not None:
            QGuiApplication.clipboard().setImage(to_qimage(self.session.result.decoded))
            self.statusBar().showMessage("Reconstruction copied to the clipboard", 5000)

    # -- misc ---------------------------------------------------------------------------------
    def edit_prefs(self) -> None:
        dlg = PreferencesDialog(self.session.prefs, self, devices=self.session.devices)
        if dlg.exec():
            self.session.set_prefs(dlg.value())
            self.store.set_prefs(self.session.prefs)
            self.statusBar().showMessage("Preferences saved; device and precision apply to the next VAE you load",
                                         8000)

    def show_error(self, message: str) -> None:
        """Status bar plus a non-blocking message box; the window stays usable."""
        self.last_error = message
        log.warning("%s", message)
        self.statusBar().showMessage(f"Error: {message}", 15000)
        box = QMessageBox(QMessageBox.Icon.Warning, "vaestudio", message, QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.setModal(False)
        box.finished.connect(lambda _r, b=box: self._error_boxes.remove(b) if b in self._error_boxes else None)
        self._error_boxes.append(box)
        box.show()

    def about(self) -> None:
        from vaestudio.ui.crash import log_path

        QMessageBox.about(self, "About vaestudio",
                          f"vaestudio {__version__}\nSee what a VAE does to your images.\n\nLog file: {log_path()}")

    def ask_about_training(self) -> bool:
        """Quitting with an unsaved training run: save, discard or stay. True when the window may close."""
        t = self.training
        if self._close_approved:
            return True
        if t.finetune.unsaved():  # its checkpoint is on disk; stopping it (as closing does) writes the last
            box = QMessageBox(QMessageBox.Icon.Question, "Quit vaestudio", t.finetune.unsaved_text(),
                              QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel, self)
            box.setDefaultButton(QMessageBox.StandardButton.Cancel)
            if box.exec() != QMessageBox.StandardButton.Discard:
                return False
        if not t.unsaved():
            return True
        box = QMessageBox(QMessageBox.Icon.Question, "Quit vaestudio",
                          f"The MNIST VAE has trained {t.step - t.saved_step} steps since it was last saved. "
                          "Save a checkpoint first?",
                          QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                          | QMessageBox.StandardButton.Cancel, self)
        box.setDefaultButton(QMessageBox.StandardButton.Save)
        answer = box.exec()
        if answer == QMessageBox.StandardButton.Discard:
            return True
        if answer == QMessageBox.StandardButton.Save:
            start = str(Path(t.last_dir or self._dir("checkpoints")) / "mnist-vae.safetensors")
            path, _ = QFileDialog.getSaveFileName(self, "Save checkpoint", start, "Checkpoints (*.safetensors)")
            if path:
                def saved() -> None:
                    self._close_approved = True
                    self.close()

                t.save_checkpoint(path, on_saved=saved)
        return False

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        if not self.ask_about_training():
            event.ignore()
            return
        self.store.set("window/geometry", self.saveGeometry())
        self.store.set("dirs/checkpoints", self.training.last_dir)
        self.store.s.sync()
        self.runner.wait_all(3000)
        for box in list(self._error_boxes):
            box.close()
        for i in range(self.tabs.count()):
            self.tabs.widget(i).close()  # each view lets go of the session
        super().closeEvent(event)
