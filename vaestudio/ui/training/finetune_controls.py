"""The fine-tune's controls: the VAE it starts from, data, held-out images, output folder, the run's
settings, its buttons and progress, and one line saying why Start is disabled when it is."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from vaestudio.ui.training.controls import RunState


def _spin(lo: int, hi: int, val: int, step: int = 1) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setSingleStep(step)
    s.setValue(val)
    return s


class LearningRate(QDoubleSpinBox):
    """A learning rate as people write it (1e-05, 0.0002), not as 0.00001 with fixed decimals."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.setDecimals(10)
        self.setRange(1e-8, 1e-1)
        self.setValue(value)

    def textFromValue(self, value: float) -> str:  # noqa: N802 - Qt API
        return f"{value:.3g}"

    def valueFromText(self, text: str) -> float:  # noqa: N802 - Qt API
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int):
        from PySide6.QtGui import QValidator

        try:
            ok = self.minimum() <= float(text) <= self.maximum()
        except ValueError:
            ok = False
        return (QValidator.State.Acceptable if ok else QValidator.State.Intermediate), text, pos

    def stepBy(self, steps: int) -> None:  # noqa: N802 - Qt API
        self.setValue(self.value() * (2.0 ** steps))  # x2 or /2 per arrow press


class FinetuneControls(QWidget):
    def __init__(self) -> None:
        super().__init__()
        self.vae_label = QLabel("")
        self.vae_label.setWordWrap(True)
        self.data_dir = QLineEdit()
        self.data_dir.setPlaceholderText("a folder of your images (searched recursively)")
        self.data_btn = QPushButton("Browse...")
        self.val = QLineEdit("0.05")
        self.val.setToolTip("A fraction of the images held out (by a fixed hash of each path), or a folder of "
                            "held-out images")
        self.val_btn = QPushButton("Browse...")
        self.out_dir = QLineEdit()
        self.out_dir.setPlaceholderText("where the checkpoint and the fine-tuned VAE go")
        self.out_dir.setToolTip("A folder that holds a checkpoint of this fine-tune already is resumed")
        self.out_btn = QPushButton("Browse...")
        self.part = QComboBox()
        self.part.addItems(["decoder", "all"])
        self.part.setItemData(0, "The encoder is frozen: the latent space stays the base's, a drop-in replacement", 3)
        self.part.setItemData(1, "Both halves with the KL term: the latent space changes", 3)
        self.steps = _spin(1, 1_000_000, 500)
        self.batch = _spin(1, 256, 4)
        self.size = _spin(16, 2048, 256, 16)
        self.size.setToolTip("Random square crops of this side (a multiple of 16)")
        self.lr = LearningRate(1e-5)
        self.lr.setToolTip("Adam's learning rate; 1e-4 and above degrade a pretrained decoder within a few steps")
        self.every = _spin(1, 100_000, 50)
        self.every.setToolTip("Measure the held-out images and write a checkpoint every N steps")
        form = QFormLayout()
        for label, w in (("VAE", self.vae_label), ("Data folder", self._row(self.data_dir, self.data_btn)),
                         ("Held out", self._row(self.val, self.val_btn)),
                         ("Output folder", self._row(self.out_dir, self.out_btn)), ("Part", self.part),
                         ("Steps", self.steps), ("Batch size", self.batch), ("Crop size", self.size),
                         ("Learning rate", self.lr), ("Validate every", self.every)):
            form.addRow(label, w)
        self.start_btn = QPushButton("Start")
        self.pause_btn = QPushButton("Pause")
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setToolTip("Stop after this step; the checkpoint is written and Continue resumes from it")
        self.inspect_btn = QPushButton("Open in inspector")
        self.inspect_btn.setToolTip("The fine-tune becomes VAE B and its base VAE A: A/B them on any image")
        self.export_btn = QPushButton("Export")
        self.export_btn.setToolTip("Write the fine-tuned VAE of the stopped run's checkpoint (vae.safetensors, "
                                   "diffusers/) without training further")
        self.reason = QLabel("")  # why Start is disabled
        self.reason.setWordWrap(True)
        self.reason.setStyleSheet("color: #b05000")
        self.progress = QProgressBar()
        self.eta = QLabel("")
        self.eta.setWordWrap(True)
        buttons = QGridLayout()
        for i, b in enumerate((self.start_btn, self.pause_btn, self.stop_btn)):
            buttons.addWidget(b, 0, i)
        buttons.addWidget(self.inspect_btn, 1, 0, 1, 2)
        buttons.addWidget(self.export_btn, 1, 2)
        box = QGroupBox("Fine-tune")
        cl = QVBoxLayout(box)
        cl.addLayout(form)
        cl.addWidget(self.reason)
        cl.addLayout(buttons)
        cl.addWidget(self.progress)
        cl.addWidget(self.eta)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(box)
        lay.addStretch(1)
        self.data_btn.clicked.connect(lambda: self._pick(self.data_dir, "Folder of training images"))
        self.val_btn.clicked.connect(lambda: self._pick(self.val, "Folder of held-out images"))
        self.out_btn.clicked.connect(lambda: self._pick(self.out_dir, "Output folder of the fine-tune"))
        self.size.editingFinished.connect(lambda: self.size.setValue(max(16, round(self.size.value() / 16) * 16)))
        self.settings = (self.data_dir, self.data_btn, self.val, self.val_btn, self.out_dir, self.out_btn,
                         self.part, self.batch, self.size, self.lr, self.every)
        self.set_state(RunState.IDLE, can_continue=False, startable=False, has_weights=False)

    @staticmethod
    def _row(edit: QLineEdit, button: QPushButton) -> QHBoxLayout:
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(edit, 1)
        row.addWidget(button)
        return row

    def _pick(self, edit: QLineEdit, title: str) -> None:
        path = QFileDialog.getExistingDirectory(self, title, edit.text())
        if path:
            edit.setText(path)

    def set_state(self, state: RunState, *, can_continue: bool, startable: bool, has_weights: bool,
                  exportable: bool = False) -> None:
        """Buttons follow the run state; ``startable``: nothing stops a run from starting (else ``reason``
        says what); ``exportable``: a stopped run's checkpoint holds steps no exported VAE does."""
        active = state in (RunState.LOADING, RunState.RUNNING, RunState.PAUSED)
        self.start_btn.setText("Continue" if can_continue else "Start")
        self.start_btn.setEnabled(not active and startable)
        self.pause_btn.setText("Resume" if state == RunState.PAUSED else "Pause")
        self.pause_btn.setEnabled(state in (RunState.RUNNING, RunState.PAUSED))
        self.stop_btn.setEnabled(active)
        self.inspect_btn.setEnabled(has_weights)  # a checkpoint is written atomically: readable mid-run
        self.export_btn.setEnabled(exportable and not active)
        for w in self.settings:  # fixed while a run goes; the number of steps may grow when it continues
            w.setEnabled(not active)
        self.steps.setEnabled(not active)
