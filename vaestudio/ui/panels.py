"""Side panels: the VAE, the noise controls, the metrics."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
)

FAMILY_CHOICES = [("auto (detected)", ""), ("SD 1.x / 2.x", "sd1"), ("SDXL", "sdxl"), ("SD3", "sd3"), ("Flux", "flux")]


class VaePanel(QGroupBox):
    load_file = Signal()
    load_folder = Signal()
    load_hub = Signal(str)
    load_recent = Signal(str)
    use_mnist = Signal()
    family_changed = Signal(str)
    compare_b = Signal()
    clear_b = Signal()
    cancel = Signal()

    def __init__(self) -> None:
        super().__init__("VAE")
        self.info = QLabel("No VAE loaded yet.\nLoad a VAE file or folder, enter a Hugging Face id, "
                           "or use a VAE trained in the MNIST studio.")
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.file_btn = QPushButton("Load VAE file...")
        self.file_btn.setToolTip(".safetensors, .ckpt, .pt or .bin (LDM or diffusers layout) (Ctrl+L)")
        self.folder_btn = QPushButton("Folder...")
        self.folder_btn.setToolTip("A diffusers model folder (config.json + weights), or a pipeline folder with vae/")
        self.hub = QLineEdit()
        self.hub.setPlaceholderText("Hugging Face id, e.g. stabilityai/sd-vae-ft-mse")
        self.hub_btn = QPushButton("Download")
        self.mnist_btn = QPushButton("Use MNIST VAE...")
        self.mnist_btn.setToolTip("The VAE trained in the MNIST studio, or a saved MNIST checkpoint")
        self.recent = QComboBox()
        self.recent.setPlaceholderText("Recent VAEs")
        self.recent.setToolTip("Swap to a recently used VAE in one click")
        self.family = QComboBox()
        for label, key in FAMILY_CHOICES:
            self.family.addItem(label, key)
        self.family.setToolTip("SD1/SDXL and SD3/Flux VAEs have identical shapes; the family sets the scaling")
        self.progress = QProgressBar()
        self.progress.hide()
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.hide()
        self.b_btn = QPushButton("A/B: compare with another VAE...")
        self.b_clear = QPushButton("Clear B")
        self.b_clear.hide()
        row1 = QHBoxLayout()
        row1.addWidget(self.file_btn)
        row1.addWidget(self.folder_btn)
        row2 = QHBoxLayout()
        row2.addWidget(self.hub, 1)
        row2.addWidget(self.hub_btn)
        row3 = QHBoxLayout()
        row3.addWidget(self.progress, 1)
        row3.addWidget(self.cancel_btn)
        row4 = QHBoxLayout()
        row4.addWidget(self.b_btn, 1)
        row4.addWidget(self.b_clear)
        form = QFormLayout()
        form.addRow("Family", self.family)
        lay = QVBoxLayout(self)
        lay.addWidget(self.info)
        lay.addLayout(row1)
        lay.addLayout(row2)
        lay.addWidget(self.mnist_btn)
        lay.addWidget(self.recent)
        lay.addLayout(form)
        lay.addLayout(row3)
        lay.addLayout(row4)
        self.file_btn.clicked.connect(self.load_file)
        self.folder_btn.clicked.connect(self.load_folder)
        self.hub_btn.clicked.connect(lambda: self.hub.text().strip() and self.load_hub.emit(self.hub.text().strip()))
        self.hub.returnPressed.connect(self.hub_btn.click)
        self.mnist_btn.clicked.connect(self.use_mnist)
        self.recent.activated.connect(lambda i: self.load_recent.emit(self.recent.itemData(i) or self.recent.itemText(i)))
        self.family.activated.connect(lambda i: self.family_changed.emit(self.family.itemData(i)))
        self.cancel_btn.clicked.connect(self.cancel)
        self.b_btn.clicked.connect(self.compare_b)
        self.b_clear.clicked.connect(self.clear_b)

    def set_recent(self, sources: list[str]) -> None:
        self.recent.clear()
        for s in sources:
            self.recent.addItem(s if len(s) < 48 else "..." + s[-45:], s)
        self.recent.setCurrentIndex(-1)

    def show_info(self, info: dict | None, device: str = "", dtype: str = "") -> None:
        if info is None:
            return
        guessed = f" (guessed: {info['family_reason']})" if info["family_guessed"] else ""
        lines = [
            f"<b>{info['source']}</b>",
            f"format: {info['format']}, keys: {info['key_layout']}",
            f"family: {info['family']}{guessed}",
            f"scaling {info['scaling_factor']}, shift {info['shift_factor']}",
            f"latent channels: {info['latent_channels']}, parameters: {info['parameters']:,}",
            f"weights {info['dtype']}; running {dtype} on {device}",
        ]
        if info.get("ignored_keys"):
            lines.append("ignored: " + ", ".join(info["ignored_keys"][:3]))
        self.info.setText("<br>".join(lines))
        idx = next((i for i in range(self.family.count()) if self.family.itemData(i) == info["family"]), 0)
        self.family.setEnabled(info["format"] != "mnist")
        self.family.setCurrentIndex(idx)

    def set_busy(self, text: str | None, done: int = 0, total: int = 0) -> None:
        busy = text is not None
        self.progress.setVisible(busy)
        self.cancel_btn.setVisible(busy)
        if busy:
            self.progress.setFormat(f"{text} %p%")
            self.progress.setRange(0, total or 0)
            self.progress.setValue(done)


class NoisePanel(QGroupBox):
    """Noise in latent space. Emits quickly for the instant preview and debounced for the decode."""

    changed = Signal()  # every move: instant preview
    settled = Signal()  # after the slider rests: full decode

    def __init__(self) -> None:
        super().__init__("Noise in latent space")
        self.off = QRadioButton("off")
        self.strength = QRadioButton("strength")
        self.timestep = QRadioButton("timestep")
        self.off.setChecked(True)
        self.group = QButtonGroup(self)
        for b in (self.off, self.strength, self.timestep):
            self.group.addButton(b)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 1000)
        self.slider.setToolTip("strength 0..2 in scaled latent units, or timestep 0..999 (flow models: 0..1000)")
        self.value_label = QLabel("0")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.reroll = QPushButton("Re-roll")
        self.reroll.setToolTip("A new random seed for the noise")
        self.snr = QLabel("SNR: -")
        row = QHBoxLayout()
        for b in (self.off, self.strength, self.timestep):
            row.addWidget(b)
        srow = QHBoxLayout()
        srow.addWidget(self.slider, 1)
        srow.addWidget(self.value_label)
        seed_row = QHBoxLayout()
        seed_row.addWidget(QLabel("seed"))
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.reroll)
        lay = QVBoxLayout(self)
        lay.addLayout(row)
        lay.addLayout(srow)
        lay.addLayout(seed_row)
        lay.addWidget(self.snr)
        self.debounce = QTimer(self)
        self.debounce.setSingleShot(True)
        self.debounce.setInterval(150)
        self.debounce.timeout.connect(self.settled)
        self.max_timestep = 999
        self.slider.valueChanged.connect(self._moved)
        self.group.buttonToggled.connect(lambda *_: self._moved())
        self.seed.valueChanged.connect(self._moved)
        self.reroll.clicked.connect(self._reroll)

    def mode(self) -> str:
        return "strength" if self.strength.isChecked() else "timestep" if self.timestep.isChecked() else "off"

    def value(self) -> float:
        v = self.slider.value() / 1000.0
        return 2.0 * v if self.mode() == "strength" else round(v * self.max_timestep)

    def params(self):
        """The noise as a NoiseSpec, or None when off."""
        from vaestudio.core.noise import NoiseSpec

        m = self.mode()
        return None if m == "off" else NoiseSpec(m, self.value(), self.seed.value())

    def _moved(self) -> None:
        m = self.mode()
        self.value_label.setText("-" if m == "off" else f"{self.value():.3g}")
        self.changed.emit()
        self.debounce.start()

    def _reroll(self) -> None:
        import random

        self.seed.setValue(random.randrange(2**31 - 1))


class MetricsPanel(QGroupBox):
    def __init__(self) -> None:
        super().__init__("Metrics")
        self.form = QFormLayout(self)
        self.labels: dict[str, QLabel] = {}
        for key in ("PSNR", "SSIM", "MAE", "Colour shift (R, G, B)", "Encode", "Decode", "Latent shape",
                    "Compression", "B: PSNR / SSIM"):
            lab = QLabel("-")
            lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.labels[key] = lab
            self.form.addRow(key, lab)

    def set_values(self, values: dict[str, str]) -> None:
        for k, lab in self.labels.items():
            lab.setText(values.get(k, "-"))

    def text(self, key: str) -> str:
        return self.labels[key].text()
