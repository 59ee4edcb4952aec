"""Remembered state (QSettings, versioned) and the user's preferences as a typed object."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
)

SETTINGS_VERSION = 1
MAX_RECENT = 10


@dataclass
class Preferences:
    device: str = "auto"
    dtype: str = "auto"
    tile: str = "auto"
    preview_decoder: str = ""  # a tiny decoder file, or a folder of them (ComfyUI's models/vae_approx)


def use_platform_settings_dir() -> str:
    """Point QSettings' user ini files at the platform's config folder, as platformdirs names it
    (~/.config on Linux, where Qt puts them too; ~/Library/Application Support on macOS;
    %LOCALAPPDATA% on Windows): the settings file is then <folder>/vaestudio/vaestudio.ini. Called when
    the window starts (``run_gui``), not at import, so tests keep their own folder."""
    from platformdirs import user_config_dir

    folder = user_config_dir(appauthor=False)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, folder)
    return folder


class Store:
    """Thin typed access to QSettings; a stored version that differs resets the store."""

    def __init__(self, settings: QSettings | None = None) -> None:
        # an ini file everywhere (tests point QSettings' user path at a temporary folder)
        self.s = settings or QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "vaestudio", "vaestudio")
        if int(self.s.value("version", 0) or 0) != SETTINGS_VERSION:
            self.s.clear()
            self.s.setValue("version", SETTINGS_VERSION)

    def prefs(self) -> Preferences:
        p = Preferences()
        for f in fields(p):
            v = self.s.value(f"prefs/{f.name}")
            if isinstance(v, str) and v:
                setattr(p, f.name, v)
        return p

    def set_prefs(self, p: Preferences) -> None:
        for k, v in asdict(p).items():
            self.s.setValue(f"prefs/{k}", v)

    def recent(self, key: str) -> list[str]:
        v = self.s.value(f"recent/{key}", [])
        if isinstance(v, str):
            v = [v]
        return [str(x) for x in (v or [])]

    def push_recent(self, key: str, item: str) -> list[str]:
        items = [item] + [x for x in self.recent(key) if x != item]
        items = items[:MAX_RECENT]
        self.s.setValue(f"recent/{key}", items)
        return items

    def get(self, key: str, default=None):
        return self.s.value(key, default)

    def set(self, key: str, value) -> None:
        self.s.setValue(key, value)


class PreferencesDialog(QDialog):
    """``devices``: what this machine has (from the warm-up worker); a stored device that is gone is
    still listed, marked unavailable, so the user sees why the next load fails."""

    def __init__(self, prefs: Preferences, parent=None, devices: list[str] | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Preferences")
        self.device = QComboBox()
        devices = list(devices or ["auto", "cpu"])
        self.device.addItems(devices)
        if prefs.device not in devices:
            self.device.addItem(prefs.device)
            self.device.setItemData(self.device.count() - 1, "not available on this machine", 3)
        self.dtype = QComboBox()
        self.dtype.addItems(["auto", "fp32", "fp16", "bf16"])
        self.tile = QComboBox()
        self.tile.addItems(["auto", "on", "off"])
        for box, val in ((self.device, prefs.device), (self.dtype, prefs.dtype), (self.tile, prefs.tile)):
            box.setCurrentText(val)
        self.preview = QLineEdit(prefs.preview_decoder)
        self.preview.setPlaceholderText("none: latent-to-RGB previews")
        self.preview.setToolTip("A tiny decoder (e.g. taesd_decoder.pth) or a folder of them, like ComfyUI's "
                                "models/vae_approx; the one matching the current VAE's family gives full-size "
                                "previews while the full decoder works")
        file_btn = QPushButton("File...")
        folder_btn = QPushButton("Folder...")
        file_btn.clicked.connect(self._pick_file)
        folder_btn.clicked.connect(self._pick_folder)
        row = QHBoxLayout()
        row.addWidget(self.preview, 1)
        row.addWidget(file_btn)
        row.addWidget(folder_btn)
        form = QFormLayout(self)
        form.addRow("Device", self.device)
        form.addRow("Precision", self.dtype)
        form.addRow("Tiled encode/decode", self.tile)
        form.addRow("Preview decoder", row)
        hint = QLabel("Device and precision apply to the next VAE you load.")
        hint.setWordWrap(True)
        form.addRow(hint)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _pick_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Tiny decoder", self.preview.text(),
                                              "Tiny decoders (*.pth *.safetensors *.pt);;All files (*)")
        if path:
            self.preview.setText(path)

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder of tiny decoders", self.preview.text())
        if path:
            self.preview.setText(path)

    def value(self) -> Preferences:
        return Preferences(self.device.currentText(), self.dtype.currentText(), self.tile.currentText(),
                           self.preview.text().strip())
