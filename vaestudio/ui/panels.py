"""Side panels: the VAE and the noise controls (the metrics are in metrics_panel.py)."""

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


def snr_text(snr_db: float | None) -> str:
    import math

    if snr_db is None:
        return "SNR: -"
    if math.isinf(snr_db):
        return "SNR: no noise" if snr_db > 0 else "SNR: pure noise"
    return f"SNR: {snr_db:.1f} dB"


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
        self.recent.setToolTip("Swap to a recently used VAE in one click")
        self.recent.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.family = QComboBox()
        self.family.setEnabled(False)
        self.family.setToolTip("Some families share shapes (SD1/SDXL, SD3/FLUX.1); the family sets the scaling "
                               "and the noise schedule")
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
        form.addRow("Recent", self.recent)
        form.addRow("Family", self.family)
        lay = QVBoxLayout(self)
        lay.addWidget(self.info)
        lay.addLayout(row1)
        lay.addLayout(row2)
        lay.addWidget(self.mnist_btn)
        lay.addLayout(form)
        lay.addLayout(row3)
        lay.addLayout(row4)
        self.file_btn.clicked.connect(self.load_file)
        self.folder_btn.clicked.connect(self.load_folder)
        self.hub_btn.clicked.connect(lambda: self.hub.text().strip() and self.load_hub.emit(self.hub.text().strip()))
        self.hub.returnPressed.connect(self.hub_btn.click)
        self.mnist_btn.clicked.connect(self.use_mnist)
        self.recent.activated.connect(lambda i: self.recent.itemData(i) and self.load_recent.emit(self.recent.itemData(i)))
        self.family.activated.connect(lambda i: self.family_changed.emit(self.family.itemData(i)))
        self.cancel_btn.clicked.connect(self.cancel)
        self.b_btn.clicked.connect(self.compare_b)
        self.b_clear.clicked.connect(self.clear_b)

    def set_recent(self, sources: list[str]) -> None:
        from pathlib import Path

        self.recent.clear()
        self.recent.setPlaceholderText("none yet")
        for s in sources:
            p = Path(s)
            name = p.name if (p.parent.name in ("", ".") or p.exists()) else s
            self.recent.addItem(name if len(name) < 40 else "..." + name[-37:], s)
            self.recent.setItemData(self.recent.count() - 1, s, Qt.ItemDataRole.ToolTipRole)
        self.recent.setCurrentIndex(0 if sources else -1)  # the most recent: the VAE loaded now
        self.recent.setEnabled(bool(sources))

    def show_info(self, info: dict | None, device: str = "", dtype: str = "",
                  families: list[tuple[str, str]] | None = None, dtype_reason: str = "") -> None:
        """What was detected about the current VAE; ``families``: (name, label) it may be switched to;
        ``dtype_reason``: why it runs in ``dtype`` (a line of its own)."""
        from html import escape
        from pathlib import Path

        if info is None:
            return
        guessed = f" (guessed: {escape(info['family_reason'])})" if info["family_guessed"] else ""
        src = info["source"]
        name = Path(src).name or src
        model = ""
        if info.get("model_latent_channels"):
            model = f"; model space {info['model_latent_channels']} at 1/{info['model_downscale']}"
        lines = [
            f"<b>{escape(name)}</b>",
            f"{escape(info['architecture'])}, {escape(info['format'])}, keys: {escape(info['key_layout'])}",
            f"family: {escape(info['family'])}{guessed}",
            f"scaling {info['scaling_factor']:g}, shift {info['shift_factor']:g}",
            f"latent: {info['latent_channels']} channels at 1/{info['downscale']}{model}",
            f"{info['parameters']:,} parameters; weights {info['dtype']}, running {dtype} on {device}",
        ]
        if dtype_reason:
            lines.append(f"precision: {escape(dtype_reason)}")
        if info.get("halves") and len(info["halves"]) < 2:
            lines.append(f"only the {info['halves'][0]}")
        if info.get("ignored_keys"):
            lines.append("ignored: " + escape(", ".join(info["ignored_keys"][:3])))
        self.info.setText("<br>".join(lines))
        self.info.setToolTip(src)
        self.family.clear()
        for fam_name, label in families or [(info["family"], info["family"])]:
            self.family.addItem(f"{fam_name}: {label}", fam_name)
        self.family.setCurrentIndex(max(0, self.family.findData(info["family"])))
        self.family.setEnabled(self.family.count() > 1)

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
        self.value_label = QLabel("off")
        self.value_label.setMinimumWidth(80)
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
        self.slider.setEnabled(False)
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

    def set_max_timestep(self, n: int) -> None:
        """A new VAE's schedule: the label and the next decode use the same step."""
        if n != self.max_timestep:
            self.max_timestep = n
            self._moved()

    def describe(self) -> str:
        m = self.mode()
        if m == "off":
            return "off"
        return f"strength {self.value():.3g}" if m == "strength" else f"t = {self.value():.0f} of {self.max_timestep}"

    def _moved(self) -> None:
        self.slider.setEnabled(self.mode() != "off")
        self.value_label.setText(self.describe())
        self.changed.emit()
        self.debounce.start()

    def _reroll(self) -> None:
        import random

        self.seed.setValue(random.randrange(2**31 - 1))
